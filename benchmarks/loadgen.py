"""A small, fast closed-loop HTTP/1.1 load generator for loopback benchmarks: ``concurrency`` keep-alive
connections, each sending its next request as soon as the previous answer is in, until ``count``
requests are done or ``time_limit_s`` passes. Raw asyncio protocol (uvloop when installed) so that the
client is not the bottleneck; every answer can be checked by a callback."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends raw bytes and returns (status, body)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed by the server ({exc})"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(head[at + 17:head.find(b"\r\n", at + 2) if head.find(b"\r\n", at + 2) > 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
        elif b"transfer-encoding: chunked" in head:
            stop = self.buffer.find(b"\r\n0\r\n\r\n", end)
            if stop < 0:
                return
            body = _dechunk(bytes(self.buffer[end + 4:stop + 7]))
            del self.buffer[:stop + 7]
        else:
            self.waiter.set_exception(ValueError("response without Content-Length or chunked encoding"))
            return
        self.waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return await self.waiter


def _dechunk(raw: bytes) -> bytes:
    out, i = [], 0
    while True:
        j = raw.find(b"\r\n", i)
        size = int(raw[i:j].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(raw[j + 2:j + 2 + size])
        i = j + 4 + size


@dataclass
class LoadResult:
    """What one load run measured."""
    sent: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    wall_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    first_error: str | None = None

    def summary(self) -> dict:
        lat = sorted(self.latencies_ns)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else None
        return {"requests": self.sent, "ok": self.ok, "errors": self.errors, "wrong_answers": self.wrong,
                "wall_s": round(self.wall_s, 4), "req_per_s": round(self.sent / self.wall_s, 1) if self.wall_s else 0,
                "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "first_error": self.first_error}


def http_post(path: str, body: bytes, host: str = "127.0.0.1", content_type: str = "application/json") -> bytes:
    """The raw bytes of an HTTP/1.1 keep-alive POST."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def run_load(host: str, port: int, requests: list[bytes], check: Callable[[int, int, bytes], bool],
                   concurrency: int, count: int, time_limit_s: float) -> LoadResult:
    """Send ``count`` requests (cycling through ``requests``) over ``concurrency`` connections; ``check(i,
    status, body)`` says whether the answer to request ``i`` is right."""
    loop = asyncio.get_running_loop()
    result = LoadResult()
    counter = iter(range(count))
    deadline = time.perf_counter() + time_limit_s

    async def worker() -> None:
        conn = None
        for i in counter:
            if time.perf_counter() > deadline:
                break
            result.sent += 1
            try:
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(Connection, host, port)
                t0 = time.perf_counter_ns()
                status, body = await conn.request(requests[i % len(requests)])
                result.latencies_ns.append(time.perf_counter_ns() - t0)
            except (OSError, ValueError) as e:
                result.errors += 1
                result.first_error = result.first_error or f"{type(e).__name__}: {e}"
                conn = None
                continue
            if status != 200:
                result.errors += 1
                result.first_error = result.first_error or f"HTTP {status}: {body[:200]!r}"
            elif not check(i, status, body):
                result.wrong += 1
                result.first_error = result.first_error or f"wrong answer: {body[:200]!r}"
            else:
                result.ok += 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result
