-- Notification worker state: pending missed-message digests (one per user and chat), mails
-- sent (for throttling), records handled or claimed (so a record is handled once), and the
-- embedded consumer's position in the event feed (events.pos).
-- Times are INTEGER microseconds since the Unix epoch (UTC), so that SQL compares instants.

CREATE TABLE notification_digests (
    user_id   TEXT NOT NULL,
    chat_id   TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    due_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, chat_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX notification_digests_by_due ON notification_digests (due_at);

CREATE TABLE notification_sends (
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,  -- the chat or group the mail was about
    sent_at INTEGER NOT NULL
) STRICT;
CREATE INDEX notification_sends_by_user ON notification_sends (user_id, kind, sent_at);
CREATE INDEX notification_sends_by_time ON notification_sends (sent_at);

CREATE TABLE notification_records (
    record_id     TEXT PRIMARY KEY,  -- an event id, or "<event id>:<user id>" for one mail
    claimed_until INTEGER,           -- NULL once finished
    done_at       INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX notification_records_by_done ON notification_records (done_at) WHERE done_at IS NOT NULL;

CREATE TABLE notification_positions (
    consumer TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
