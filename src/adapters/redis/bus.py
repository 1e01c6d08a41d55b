"""Live fan-out between instances over Redis Pub/Sub: a wake-up hint, never the record.

Channels. A record is published once per key it wakes (its `stream_id` and each of
`event.wakes`) on the channel `{prefix}s:{key}`, encoded once. Pub/Sub channels ignore the
database number, so the prefix is what separates deployments (and tests) sharing one server.

One connection per process. A supervisor task owns a single Pub/Sub connection that multiplexes
every local subscription: the channel set is the union of what local subscriptions watch,
reference counted by key; a writer reconciles that desired set with what was sent on the
current connection, so `watch`/`unwatch` (synchronous, as the port wants) only mark it dirty.

Delivery. A record reaching this process on channel `k` goes to each local subscription that
watches `k`, unless the subscription also watches a key earlier in the record's key order on
a confirmed channel (then that channel brought it already): each subscription gets each record
once, like the in-process bus. Queues are bounded; a full one drops the record and sets
`overflowed`, and the reader must catch up from the log.

Signals. An ephemeral `Signal` (typing) goes on its stream's channel with `SIGNAL_MARK` before
its payload: a record is JSON and never starts with that byte, so a reader tells them apart.
Signals are never written to a stream or the log, and a full queue drops them without a gap.

Publish-after-subscribe. `publish` first waits (up to `settle_timeout_s`) until Redis confirmed
every channel a local subscription asked for, so a record published after `subscribe()` in the
same process reaches it. Across processes the bus is a hint: see below.

Reconnection. Redis Pub/Sub is at-most-once and redis-py's asyncio PubSub does not reliably
reconnect or resubscribe by itself (redis-py #2089, #2417), so the Pub/Sub client is built
with no retries and the supervisor does it: on any connection error it drops the connection,
waits with exponential backoff and jitter, connects again and resubscribes every channel.
Whatever was published while it was away is lost to this process, so once every channel is
confirmed again the bus signals each live subscription: its `overflowed` flag is set, its
`resyncs` counter grows and its `on_resync` callback (if any) runs. A consumer reacts exactly
as to an overflow: read its streams from the log from its cursor (the log is the record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from adapters.redis.codec import decode_record, encode_record, record_keys
from adapters.redis.connection import redis_client
from adapters.subscriptions import QueuedSubscription
from chatcore.domain.events import EventRecord
from chatcore.ports.events import Signal

_log = logging.getLogger(__name__)

ResyncCallback = Callable[[], None]

# Starts a signal's message on a channel; a JSON record never does.
SIGNAL_MARK = b"\x00"

# Channels per SUBSCRIBE/UNSUBSCRIBE command: keeps each command a reasonable size.
_CHANNELS_PER_COMMAND = 1000


class RedisSubscription(QueuedSubscription):
    """One local subscriber: a bounded queue fed by the bus's shared Pub/Sub connection."""

    def __init__(
        self,
        bus: RedisEventBus,
        stream_ids: Iterable[str],
        max_queued: int,
        on_resync: ResyncCallback | None,
    ) -> None:
        super().__init__(max_queued)
        self._bus = bus
        self.resyncs = 0
        self.on_resync = on_resync
        self.watch(stream_ids)

    def watch(self, stream_ids: Iterable[str]) -> None:
        if self.closed:
            return
        new = set(stream_ids) - self.streams
        self.streams |= new
        self._bus._retain(self, new)

    def unwatch(self, stream_ids: Iterable[str]) -> None:
        gone = self.streams & set(stream_ids)
        self.streams -= gone
        self._bus._release(self, gone)

    async def ready(self) -> None:
        await self._bus._settle()

    def resynced(self) -> None:
        self.resyncs += 1
        self.overflowed = True
        self.signal_gap()
        if self.on_resync is not None:
            try:
                self.on_resync()
            except Exception:
                _log.exception("a subscription's on_resync callback failed")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._bus._release(self, self.streams)
        self.streams = set()
        self._bus._forget(self)
        self.offer_end()


class RedisEventBus:
    """EventBus over Redis Pub/Sub. Call `start()` before use and `close()` at shutdown."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "chatcore:",
        max_queued: int = 10_000,
        backoff_initial_s: float = 0.1,
        # Capped low: live fan-out resumes within about 2 s of Redis returning, whatever the
        # outage's length; one connection attempt every 1-2 s costs a dead server nothing.
        backoff_max_s: float = 2.0,
        settle_timeout_s: float = 1.0,
        socket_timeout_s: float = 5.0,
        health_check_interval_s: int = 15,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._channel_prefix = f"{prefix}s:".encode()
        self._control_channel = f"{prefix}bus-control"
        self._max_queued = max_queued
        self._backoff_initial_s, self._backoff_max_s = backoff_initial_s, backoff_max_s
        self._settle_timeout_s = settle_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._health_check_interval_s = health_check_interval_s
        self._poll_interval_s = poll_interval_s

        self._subscriptions: set[RedisSubscription] = set()
        self._watchers: dict[str, set[RedisSubscription]] = {}  # key -> local subscriptions
        self._confirmed: set[str] = set()  # keys Redis confirmed on the current connection
        self._unconfirmed: set[str] = set()  # keys wanted but not confirmed yet
        self._all_confirmed = asyncio.Event()
        self._all_confirmed.set()
        self._dirty = asyncio.Event()

        self._publisher: Redis | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = False
        self._outage = False  # the connection failed and has not come back yet
        self._resync_pending = False
        self.reconnects = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._supervisor is not None:
            return
        self._publisher = redis_client(
            self._url, socket_timeout_s=self._socket_timeout_s, client_name="chatcore-bus-pub"
        )
        self._supervisor = asyncio.create_task(self._supervise(), name="chatcore-redis-bus")

    async def close(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            # Waited for with asyncio.wait: the supervisor's own CancelledError is not raised
            # here, while a cancellation of close()'s caller still is (suppress would eat both).
            await asyncio.wait([supervisor])
            if not supervisor.cancelled():
                supervisor.result()  # an error it ended with, raised as before
        for sub in list(self._subscriptions):
            sub.offer_end()
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None

    @property
    def connected(self) -> bool:
        """Whether the Pub/Sub connection is up with every channel confirmed (for /readyz)."""
        return self._connected and not self._unconfirmed

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the Pub/Sub connection is up and every wanted channel confirmed."""
        async with asyncio.timeout(timeout_s):
            while not self.connected:
                await self._all_confirmed.wait()
                if not self.connected:
                    await asyncio.sleep(0.01)

    # -- the port -----------------------------------------------------------------------------

    def subscribe(
        self, stream_ids: Iterable[str], *, on_resync: ResyncCallback | None = None
    ) -> RedisSubscription:
        sub = RedisSubscription(self, stream_ids, self._max_queued, on_resync)
        self._subscriptions.add(sub)
        return sub

    async def publish(self, records: Sequence[EventRecord]) -> None:
        await self.publish_encoded([(r, encode_record(r)) for r in records])

    async def signal(self, stream_id: str, payload: bytes) -> None:
        if self._publisher is None:
            raise RuntimeError("RedisEventBus.start() was not called")
        await self._settle()
        await self._publisher.publish(self._channel(stream_id), SIGNAL_MARK + payload)

    async def publish_encoded(self, encoded: Sequence[tuple[EventRecord, bytes]]) -> None:
        """Publish records already encoded with `codec.encode_record` (shared with the stream)."""
        if not encoded:
            return
        if self._publisher is None:
            raise RuntimeError("RedisEventBus.start() was not called")
        await self._settle()
        async with self._publisher.pipeline(transaction=False) as pipe:
            for record, payload in encoded:
                for key in record_keys(record):
                    pipe.publish(self._channel(key), payload)
            await pipe.execute()

    # -- channel bookkeeping (called by subscriptions) ----------------------------------------

    def _channel(self, key: str) -> str:
        return f"{self._prefix}s:{key}"

    def _retain(self, sub: RedisSubscription, keys: Iterable[str]) -> None:
        for key in keys:
            watchers = self._watchers.setdefault(key, set())
            if not watchers:
                self._unconfirmed.add(key)
                self._all_confirmed.clear()
                self._dirty.set()
            watchers.add(sub)

    def _release(self, sub: RedisSubscription, keys: Iterable[str]) -> None:
        for key in keys:
            watchers = self._watchers.get(key)
            if watchers is None:
                continue
            watchers.discard(sub)
            if not watchers:
                del self._watchers[key]
                self._unconfirmed.discard(key)
                self._dirty.set()
        if not self._unconfirmed:
            self._all_confirmed.set()

    def _forget(self, sub: RedisSubscription) -> None:
        self._subscriptions.discard(sub)

    async def _settle(self) -> None:
        """Let channels that local subscriptions just asked for be confirmed before publishing."""
        if not self._unconfirmed or self._outage or self._supervisor is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settle_timeout_s):
                await self._all_confirmed.wait()

    # -- the supervisor -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while True:
            client = redis_client(
                self._url,
                retries=0,
                socket_timeout_s=self._socket_timeout_s,
                client_name="chatcore-bus-sub",
                health_check_interval_s=self._health_check_interval_s,
            )
            pubsub = client.pubsub()
            self._resync_pending = failures > 0 or self.reconnects > 0
            try:
                await self._session(pubsub)
            except (RedisError, OSError) as exc:
                if self._connected:
                    _log.warning("lost the Redis Pub/Sub connection (%s); reconnecting", exc)
                else:
                    _log.info("cannot reach Redis for Pub/Sub (%s); retrying", exc)
            finally:
                was_connected = self._connected
                self._lose_connection()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            if was_connected:
                failures = 0
                self.reconnects += 1
            failures += 1
            await asyncio.sleep(self.reconnect_delay(failures))

    def reconnect_delay(self, failures: int) -> float:
        """Exponential with 'equal jitter': between half and all of the capped exponential delay."""
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** (failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _session(self, pubsub: PubSub) -> None:
        # The control channel keeps the connection in subscribed mode even with no local
        # subscription, and its confirmation tells us the connection works.
        await pubsub.subscribe(self._control_channel)
        sent: set[str] = set()
        writer = asyncio.create_task(self._reconcile(pubsub, sent), name="chatcore-redis-bus-writer")
        try:
            while True:
                message = await pubsub.get_message(timeout=self._poll_interval_s)
                if writer.done():
                    writer.result()  # surfaces the writer's connection error
                if message is not None:
                    self._handle(message)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await writer

    async def _reconcile(self, pubsub: PubSub, sent: set[str]) -> None:
        """Make the channels subscribed on this connection match what local subscriptions watch."""
        while True:
            self._dirty.clear()
            wanted = set(self._watchers)
            to_add, to_remove = sorted(wanted - sent), sorted(sent - wanted)
            for chunk in _chunks(to_add):
                await pubsub.subscribe(*(self._channel(k) for k in chunk))
                sent.update(chunk)
            for chunk in _chunks(to_remove):
                await pubsub.unsubscribe(*(self._channel(k) for k in chunk))
                sent.difference_update(chunk)
            if not to_add and not to_remove:
                await self._dirty.wait()

    def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if isinstance(channel, str):
            channel = channel.encode()
        if kind == "message":
            if channel.startswith(self._channel_prefix):
                self._dispatch(channel[len(self._channel_prefix) :].decode(), message["data"])
            return
        if channel == self._control_channel.encode():
            if kind == "subscribe":
                self._connected, self._outage = True, False
                self._check_resync()
            return
        if not channel.startswith(self._channel_prefix):
            return
        key = channel[len(self._channel_prefix) :].decode()
        if kind == "subscribe":
            self._confirmed.add(key)
            self._unconfirmed.discard(key)
            if not self._unconfirmed:
                self._all_confirmed.set()
            self._check_resync()
        elif kind == "unsubscribe":
            self._confirmed.discard(key)

    def _check_resync(self) -> None:
        if self._resync_pending and self._connected and not self._unconfirmed:
            self._resync_pending = False
            _log.info("Redis Pub/Sub resubscribed; local subscriptions catch up from the log")
            for sub in list(self._subscriptions):
                sub.resynced()

    def _dispatch(self, key: str, payload: bytes) -> None:
        watchers = self._watchers.get(key)
        if not watchers:
            return
        if payload[:1] == SIGNAL_MARK:  # one channel per signal: each watcher gets it once
            signal = Signal(key, payload[1:])
            for sub in list(watchers):
                sub.offer_signal(signal)
            return
        try:
            record = decode_record(payload)
        except Exception:
            _log.exception("dropping an undecodable record on channel %s", self._channel(key))
            return
        keys = record_keys(record)
        earlier = keys[: keys.index(key)] if key in keys else ()
        for sub in list(watchers):
            # The record came on an earlier key's channel already if the subscription watches it.
            if any(k in sub.streams and k in self._confirmed for k in earlier):
                continue
            sub.offer(record)

    def _lose_connection(self) -> None:
        self._connected = False
        self._outage = True
        self._confirmed.clear()
        self._unconfirmed = set(self._watchers)
        if self._unconfirmed:
            self._all_confirmed.clear()
        self._dirty.set()


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), _CHANNELS_PER_COMMAND):
        yield keys[start : start + _CHANNELS_PER_COMMAND]
