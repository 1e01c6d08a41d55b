"""Delivery through the cursor, under random sends, joins, removals, polls, lost responses, and
live connections that open, read, time out and drop.

Each client polls with the last cursor it acknowledged; some responses are "lost" (the client
never sees them and asks again with its old cursor). A client may also hold a live connection
(the WebSocket session): frames it read move the client's cursor, a dropped connection loses
what it had not handed over, and a reconnect resumes from the cursor. Whatever happens, what each client
accepted is exactly the log of the streams it could see: in order, no gap, no duplicate, and
nothing from a stream while it was outside.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from adapters.memory.kit import memory_core
from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand
from chatcore.application.messages import SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.realtime import AnyServerFrame, EventFrame, RealtimeSession, ResyncFrame
from chatcore.application.updates import CursorCodec, GetUpdates
from chatcore.domain.errors import DomainError
from chatcore.domain.events import EventRecord, visibility_change

USERS = 3
CHATS = 2


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.core = memory_core()
        self.get = GetUpdates(self.core.service.deps, self.core.log, CursorCodec(b"s" * 32, 1 << 15))
        self.users: list[str] = []
        self.chats: list[str] = []
        self.cursor: dict[str, str] = {}
        self.start: dict[str, dict[str, int]] = {}
        self.accepted: dict[str, list[EventRecord]] = defaultdict(list)
        self.sockets: dict[str, RealtimeSession] = {}

    def run[T](self, coro: object) -> T:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type,no-any-return]

    def teardown(self) -> None:
        try:
            for session in self.sockets.values():
                self.run(session.close())
            if self.users:
                self.drain_and_check()
        finally:
            self.loop.close()

    @initialize()
    def setup(self) -> None:
        service = self.core.service
        for i in range(USERS):
            user = self.run(
                service.create_user(CreateUserCommand(email=f"u{i}@example.com", display_name=f"U{i}"))
            )
            self.users.append(user.id)
        owner = self.users[0]
        for _ in range(CHATS):
            chat = self.run(
                service.create_group_chat(CreateGroupChatCommand(actor=owner, title="t", member_ids=[]))
            )
            self.chats.append(chat.id)
        for user in self.users:
            page = self.run(self.get(user, None))
            self.cursor[user] = page.cursor
            self.start[user] = {
                s: self.core.store.stream_seqs.get(s, 0) for s in self.run(self.get.streams_of(user))
            }

    # -- what happens in the chats ----------------------------------------------------------

    @rule(
        user=st.integers(0, USERS - 1), chat=st.integers(0, CHATS - 1), body=st.text(min_size=1, max_size=5)
    )
    def send(self, user: int, chat: int, body: str) -> None:
        command = SendMessageCommand(actor=self.users[user], chat_id=self.chats[chat], body=body)
        with contextlib.suppress(DomainError):  # not a member, or a blank body: refused, nothing logged
            self.run(self.core.service.send_message(command))

    @rule(user=st.integers(1, USERS - 1), chat=st.integers(0, CHATS - 1))
    def add(self, user: int, chat: int) -> None:
        command = ChatMemberCommand(actor=self.users[0], chat_id=self.chats[chat], user_id=self.users[user])
        with contextlib.suppress(DomainError):
            self.run(self.core.service.add_chat_member(command))

    @rule(user=st.integers(1, USERS - 1), chat=st.integers(0, CHATS - 1))
    def remove(self, user: int, chat: int) -> None:
        command = ChatMemberCommand(actor=self.users[0], chat_id=self.chats[chat], user_id=self.users[user])
        with contextlib.suppress(DomainError):
            self.run(self.core.service.remove_chat_member(command))

    # -- what the clients do ----------------------------------------------------------------

    @rule(user=st.integers(0, USERS - 1), limit=st.integers(1, 5), lost=st.booleans())
    def poll(self, user: int, limit: int, lost: bool) -> None:
        client = self.users[user]
        if client in self.sockets:
            return  # one channel at a time: a connected client reads its socket
        page = self.run(self.get(client, self.cursor[client], limit))
        assert page.resync_required == []  # nothing is pruned here
        if not lost:
            self.accepted[client].extend(page.events)
            self.cursor[client] = page.cursor

    # -- clients on a live connection (the WebSocket session, without its transport) ---------

    @rule(user=st.integers(0, USERS - 1))
    def connect(self, user: int) -> None:
        """Open a connection resuming from the last cursor the client kept."""
        client = self.users[user]
        if client not in self.sockets:
            session = RealtimeSession(client, self.core.service, self.get, self.core.bus)
            self.accept(client, self.run(session.open(self.cursor[client])))
            self.sockets[client] = session

    @rule(user=st.integers(0, USERS - 1))
    def receive(self, user: int) -> None:
        """Read what the connection has now; the last wait times out (and is cancelled)."""
        session = self.sockets.get(self.users[user])
        while session is not None:
            try:
                frames = self.run(asyncio.wait_for(session.next_frames(), 0.005))
            except TimeoutError:
                return
            self.accept(self.users[user], frames)

    @rule(user=st.integers(0, USERS - 1))
    def drop(self, user: int) -> None:
        """The connection dies; frames it had not handed over are lost with it."""
        session = self.sockets.pop(self.users[user], None)
        if session is not None:
            self.run(session.close())

    def accept(self, client: str, frames: list[AnyServerFrame]) -> None:
        for frame in frames:
            assert not isinstance(frame, ResyncFrame)  # nothing is pruned here
            if isinstance(frame, EventFrame):
                self.accepted[client].append(frame.record)
                self.cursor[client] = frame.cursor

    @precondition(lambda self: bool(self.users))
    @invariant()
    def deliveries_match_the_log(self) -> None:
        for client in self.users:
            self.check(client, drained=False)

    def drain_and_check(self) -> None:
        for client in self.users:
            while True:
                page = self.run(self.get(client, self.cursor[client]))
                self.accepted[client].extend(page.events)
                self.cursor[client] = page.cursor
                if not page.has_more:
                    break
            self.check(client, drained=True)

    def check(self, client: str, *, drained: bool) -> None:
        by_stream: dict[str, list[int]] = defaultdict(list)
        for record in self.accepted[client]:
            by_stream[record.stream_id].append(record.seq)
        for stream in {r.stream_id for r in self.core.store.log} | set(by_stream):
            got = by_stream.get(stream, [])
            assert len(got) == len(set(got)), f"duplicate delivery in {stream}"
            assert got == sorted(got), f"out of order in {stream}"
            allowed = self.visible_seqs(client, stream)
            assert set(got) <= set(allowed), f"foreign events from {stream}"
            if got:
                # No gap: from the first delivered event on, every visible event was delivered.
                expected = [s for s in allowed if got[0] <= s <= got[-1]]
                assert got == expected, f"gap in {stream}: {got} vs {expected}"
            if drained:
                start = self.start[client].get(stream)
                if start is not None:
                    assert got == [s for s in allowed if s > start], f"missed events of {stream}"
                elif got:
                    assert got == [s for s in allowed if s >= got[0]]

    def visible_seqs(self, client: str, stream: str) -> list[int]:
        """Seqs of the stream's events during which the client could see it (join and leave included)."""
        visible = stream == client or stream in self.start[client]
        seen = []
        for record in (r for r in self.core.store.log if r.stream_id == stream):
            change = visibility_change(record.event, client)
            visible = visible or change is True
            if visible:
                seen.append(record.seq)
            if change is False:
                visible = False
        return seen


TestDelivery = DeliveryMachine.TestCase
TestDelivery.settings = settings(stateful_step_count=30, deadline=None)
