"""Lean load-generator clients on asyncio protocols: HTTP/1.1 keep-alive and WebSocket.

Hand-written so that the client costs far less CPU than the server it measures (the load
generator shares the machine's two cores with the server): requests are pre-built bytes,
responses are split on Content-Length, WebSocket frames are parsed in `data_received` and
handed to a callback with their arrival time, without an `await` per frame.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable

CRLF2 = b"\r\n\r\n"


class HttpError(Exception):
    pass


class _HttpProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buf.find(CRLF2)
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        status = int(head[9:12])
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
        elif b"transfer-encoding: chunked" in head:
            stop = self.buf.find(b"\r\n0\r\n\r\n", end)
            if stop < 0:
                return
            body = _dechunk(bytes(self.buf[end + 4 : stop + 2]))
            del self.buf[: stop + 7]
        else:  # no body (204, 304)
            body = b""
            del self.buf[: end + 4]
        self.waiter.set_result((status, body))


def _dechunk(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        out += data[j + 2 : j + 2 + size]
        i = j + 2 + size + 2
    return bytes(out)


class HttpConn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int, proto: _HttpProtocol) -> None:
        self.host, self.port, self._p = host, port, proto

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_HttpProtocol, host, port)
        return cls(host, port, proto)

    def build(self, method: str, path: str, *, token: str | None = None, body: bytes | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    async def send(self, raw: bytes, timeout_s: float = 30.0) -> tuple[int, bytes]:
        p = self._p
        if p.closed or p.transport is None:
            raise HttpError("connection closed")
        p.waiter = asyncio.get_running_loop().create_future()
        p.transport.write(raw)
        if p.buf:
            p.data_received(b"")
        return await asyncio.wait_for(p.waiter, timeout_s)

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()


# -- WebSocket -----------------------------------------------------------------------------------


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n == 0:
        return key
    stream = (key * (n // 4 + 1))[:n]
    return key + (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + _mask(payload)


PING_FRAME = b'{"type":"ping","id":"hb"}'


class _WsProtocol(asyncio.Protocol):
    def __init__(self, on_text: Callable[[bytes, int], None] | None) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.fragments = bytearray()
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(HttpError(f"connection lost before the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(CRLF2)
            if end < 0:
                return
            status = int(self.buf[9:12])
            del self.buf[: end + 4]
            self.upgraded.set_result(status)
            if status != 101:
                return
        self._frames(time.monotonic_ns())

    def _frames(self, now: int) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b1, b2 = buf[0], buf[1]
            n, off = b2 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                return
            payload = bytes(buf[off : off + n])
            del buf[: off + n]
            opcode, fin = b1 & 0x0F, b1 & 0x80
            if opcode == 0 or not fin:  # fragments: keep until the final one
                self.fragments += payload
                if not fin:
                    continue
                payload, opcode = bytes(self.fragments), 1
                self.fragments.clear()
            if opcode in (1, 2):
                self.received += 1
                if b'"reply_within_ms":' in payload and b'"reply_within_ms":null' not in payload:
                    self.send_text(PING_FRAME)
                if self.on_text is not None:
                    self.on_text(payload, now)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result(code)
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(client_frame(8, payload[:2]))
                    self.transport.close()
            elif opcode == 9 and self.transport is not None:
                self.transport.write(client_frame(10, payload))

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(1, payload))


class WsConn:
    def __init__(self, proto: _WsProtocol) -> None:
        self._p = proto

    @property
    def closed(self) -> asyncio.Future[int]:
        return self._p.closed

    @property
    def received(self) -> int:
        return self._p.received

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        token: str | None = None,
        on_text: Callable[[bytes, int], None] | None = None,
        timeout_s: float = 30.0,
    ) -> WsConn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: _WsProtocol(on_text), host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        assert proto.transport is not None
        proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = await asyncio.wait_for(proto.upgraded, timeout_s)
        if status != 101:
            proto.transport.close()
            raise HttpError(f"WebSocket upgrade of {path} answered {status}")
        return cls(proto)

    def send_text(self, payload: bytes) -> None:
        self._p.send_text(payload)

    def close(self) -> None:
        t = self._p.transport
        if t is not None and not t.is_closing():
            t.write(client_frame(8, (1000).to_bytes(2, "big")))
            t.close()
