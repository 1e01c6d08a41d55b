#!/usr/bin/env bash
# The README's walk-through. tests/integration/test_quickstart.py runs this very file against a
# fresh `chatcore serve`, so every command here is known to work.
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8000}
MAIL=${MAIL:-./chatcore-data/mail}
PY=${PY:-.venv/bin/python}
field() { "$PY" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
post() { curl -sf -X POST "$BASE$1" -H 'content-type: application/json' "${@:3}" -d "$2"; }

# 1. Register two people. Each gets a mail; on the embedded default it is a file in $MAIL.
for who in ann bob; do
  post /v1/auth/register "{\"email\":\"$who@example.com\",\"password\":\"quiet harbour lights $who\",\"display_name\":\"$who\"}" >/dev/null
done

# 2. Log in by email code: ask for a code, read it from the newest mail, trade it for tokens.
login() {
  local attempt code
  attempt=$(post /v1/auth/email-code "{\"email\":\"$1@example.com\"}" | field attempt_id)
  code=$(grep -ho 'Your code: [0-9]*' "$(ls -t "$MAIL"/*.eml | head -1)" | cut -d' ' -f3)
  post /v1/auth/email-code/verify "{\"attempt_id\":\"$attempt\",\"code\":\"$code\"}" | field access_token
}
ANN=$(login ann)
BOB=$(login bob)
BOB_ID=$(curl -sf "$BASE/v1/users/me" -H "authorization: Bearer $BOB" | field id)

# 3. Ann opens a chat with Bob.
CHAT=$(post /v1/chats "{\"title\":\"Lunch\",\"member_ids\":[\"$BOB_ID\"]}" -H "authorization: Bearer $ANN" | field id)

# 4. Bob listens over a WebSocket (one socket for all his chats) while Ann sends.
"$PY" - "$BASE" "$BOB" <<'LISTEN' > bob-heard.txt &
import asyncio, json, sys, websockets
async def main(base: str, token: str) -> None:
    url = base.replace("http", "ws", 1) + "/v1/ws"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        print("connected", flush=True)
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame["type"] == "event" and frame["record"]["event"]["type"] == "message.posted":
                print(frame["record"]["event"]["body"], flush=True)
                return
asyncio.run(main(*sys.argv[1:]))
LISTEN
LISTENER=$!
until grep -q connected bob-heard.txt 2>/dev/null; do sleep 0.1; done
post "/v1/chats/$CHAT/messages" '{"body":"Noon at the usual place?","client_msg_id":"ann-1"}' -H "authorization: Bearer $ANN" >/dev/null
wait $LISTENER
echo "Bob heard over WebSocket: $(tail -1 bob-heard.txt)"

# 5. Long-polling: a cursor tells how far Bob has read; the next poll waits for news.
CURSOR=$(curl -sf "$BASE/v1/updates" -H "authorization: Bearer $BOB" | field cursor)
post "/v1/chats/$CHAT/messages" '{"body":"Or one o clock?"}' -H "authorization: Bearer $ANN" >/dev/null
curl -sf "$BASE/v1/updates?cursor=$CURSOR&timeout=10" -H "authorization: Bearer $BOB" \
  | "$PY" -c "import json,sys; print('Bob polled:', [e['event']['body'] for e in json.load(sys.stdin)['events'] if e['event']['type'] == 'message.posted'])"

# 6. History, newest first page, with unread counts on Bob's chat list.
curl -sf "$BASE/v1/chats/$CHAT/messages?limit=50" -H "authorization: Bearer $BOB" \
  | "$PY" -c "import json,sys; print('History:', [(m['seq'], m['body']) for m in json.load(sys.stdin)['messages']])"
curl -sf "$BASE/v1/chats" -H "authorization: Bearer $BOB" \
  | "$PY" -c "import json,sys; print('Bob unread:', [(c['chat']['title'], c['unread_count']) for c in json.load(sys.stdin)['chats']])"
