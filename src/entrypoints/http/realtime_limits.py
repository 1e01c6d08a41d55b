"""The per-connection limits of the WebSocket transport: frame rate, send queue, sockets per user."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque


class TokenBucket:
    """`burst` frames at once, refilled at `per_s`: 100/min sustained with a burst of 20."""

    def __init__(self, per_s: float, burst: int) -> None:
        self._per_s, self._burst = per_s, float(burst)
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def retry_after_s(self) -> int:
        return max(1, int((1 - self._tokens) / self._per_s + 0.999))


class SendQueue:
    """Frames waiting for the socket, bounded in count and bytes.

    Ephemeral frames (typing, plain heartbeats) never overflow it: they are dropped when there is
    no room, and dropped first when a durable frame needs room. A durable frame that still does not
    fit makes `push` return False: the client reads too slowly and must resume from its cursor.
    One frame is always let into an empty queue, whatever its size. Taking is synchronous
    (`pop`): the connection's writer runs only while frames are queued.
    """

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._items: deque[tuple[str, int, bool]] = deque()
        self.frames = self.bytes = 0
        self.shed = 0  # ephemeral frames dropped
        self.deepest = 0  # the most frames ever queued (for diagnostics and tests)
        self.closed = False
        self._room: asyncio.Event | None = None  # made only while a catch-up waits for room

    def _fits(self, size: int) -> bool:
        return self.frames == 0 or (
            self.frames + 1 <= self.max_frames and self.bytes + size <= self.max_bytes
        )

    def push(self, text: str, size: int, *, ephemeral: bool = False) -> bool:
        if self.closed:
            return True  # closing: nothing more goes out, and nothing overflows either
        if not self._fits(size):
            if ephemeral:
                self.shed += 1
                return True
            self._shed_ephemeral()
            if not self._fits(size):
                return False
        self._items.append((text, size, ephemeral))
        self.frames += 1
        self.bytes += size
        self.deepest = max(self.deepest, self.frames)
        return True

    def _shed_ephemeral(self) -> None:
        kept: deque[tuple[str, int, bool]] = deque()
        for item in self._items:
            if item[2]:
                self.shed += 1
                self.frames -= 1
                self.bytes -= item[1]
            else:
                kept.append(item)
        self._items = kept

    async def wait_for_room(self, size: int) -> None:
        """Until a frame of `size` would fit (catch-up reads go at the client's pace)."""
        while not self.closed and not self._fits(size):
            self._room = self._room or asyncio.Event()
            self._room.clear()
            await self._room.wait()

    def pop(self) -> str | None:
        """The next frame to send; None when there is none (now)."""
        if not self._items:
            return None
        text, size, _ = self._items.popleft()
        self.frames -= 1
        self.bytes -= size
        if self._room is not None:
            self._room.set()
        return text

    def close(self, *, drop: bool) -> None:
        """No more frames; with `drop`, forget those not sent yet."""
        self.closed = True
        if drop:
            self._items.clear()
            self.frames = self.bytes = 0
        if self._room is not None:
            self._room.set()


class SocketRegistry:
    """Open connections per user in this process (WebSockets, waiting long-polls); the caps are
    per process."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def acquire(self, user_id: str, most: int) -> bool:
        if self._open[user_id] >= most:
            return False
        self._open[user_id] += 1
        return True

    def release(self, user_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    def count(self, user_id: str | None = None) -> int:
        """Sockets open for one user, or in all (the `ws_connections` gauge)."""
        return self._open[user_id] if user_id is not None else sum(self._open.values())
