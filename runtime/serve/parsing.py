"""Large REST request bodies parsed off the event loop. Parsing JSON holds Python's interpreter lock for as
long as it takes (tens of milliseconds for megabytes), so a thread would not help: a body whose JSON is
``LARGE_JSON_BYTES`` or more is parsed, its numbers made into arrays, in a helper process started on first
need, while the event loop goes on answering others; smaller ones are parsed in place, where that is
cheaper than the trip."""
from __future__ import annotations

import asyncio
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from torchport.runtime.serve.inference import InferRequest, ProtocolError, json_values
from torchport.runtime.serve.protocol import decode_request

LARGE_JSON_BYTES = 256 * 1024


def _quiet() -> None:
    """The helper process leaves Ctrl+C and SIGHUP to the server (it ends when the server does)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def decode_in_helper(body: bytes, header_length: int | None, model: str,
                     version: str | None) -> tuple[InferRequest | None, bool, tuple[int, str] | None]:
    """``protocol.decode_request`` with each input's JSON numbers already an array (what crosses back to the
    server is arrays, copied in one piece, not millions of Python objects): (request, binary output, None),
    or (None, False, (status, message)) for a bad request."""
    try:
        request, binary = decode_request(body, header_length, model, version)
        for tensor in request.inputs:
            if isinstance(tensor.data, list):
                tensor.data = json_values(tensor.data, f"input {tensor.name!r}")
            elif isinstance(tensor.data, memoryview):
                tensor.data = tensor.data.tobytes()
        return request, binary, None
    except ProtocolError as e:
        return None, False, (e.status, str(e))


class BodyParser:
    """Decodes large REST request bodies in the helper process."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def decode(self, body: bytes, header_length: int | None, model: str,
                     version: str | None) -> tuple[InferRequest, bool]:
        """The data plane's request and whether binary output is wanted, decoded in the helper process (for
        bodies whose JSON is LARGE_JSON_BYTES or more); ProtocolError for a bad body."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet)
        try:
            request, binary, error = await asyncio.get_running_loop().run_in_executor(
                self._pool, decode_in_helper, body, header_length, model, version)
        except BrokenProcessPool:  # the helper died (killed from outside): parse here, start another next time
            self._pool = None
            return decode_request(body, header_length, model, version)
        if error is not None:
            raise ProtocolError(*error)
        return request, binary

    def close(self) -> None:
        """Stop the helper process, if one was started (without waiting for a parse in progress)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
