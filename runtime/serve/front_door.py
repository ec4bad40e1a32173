"""The HTTP/1.1 front door uvicorn runs for torchport: its httptools protocol with the request line and
headers capped together (``--max-header-bytes``, 64 KiB by default). Bytes are counted as they arrive, and
the parser never gets more than the cap of one request's head: past it the connection is answered 431 and
closed at once, before the rest is read (without the cap, the parser would buffer a 64 MiB header whole,
copying it over and over, while every other request on the event loop waited)."""
from __future__ import annotations

from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from torchport.runtime.serve.config import DEFAULT_MAX_HEADER_BYTES


class ServerConfig(uvicorn.Config):
    """uvicorn's settings, with the cap on a request's line and headers (read by ``CappedHttpProtocol``)."""

    def __init__(self, app: Any, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.max_header_bytes = max_header_bytes


class CappedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose line and headers pass the cap with 431. (The
    base class's methods are called directly rather than through super(): this runs for every request.)"""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.max_header_bytes = getattr(config, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES)
        self._in_head, self._head_bytes, self._heads = True, 0, 0

    def on_message_begin(self) -> None:
        _on_message_begin(self)
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        _on_headers_complete(self)

    def on_message_complete(self) -> None:
        _on_message_complete(self)
        self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            return _data_received(self, data)
        room = self.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            return _data_received(self, data)
        if room > 0:  # the head may end within the cap, its body (or the next request) following it
            heads = self._heads
            self._head_bytes += room
            _data_received(self, data[:room])
            if self.transport.is_closing():
                return
            if self._heads != heads:  # it did: the rest is counted against the next head, if it is one
                return self.data_received(data[room:])
        self._refuse()

    def _refuse(self) -> None:
        body = orjson.dumps({"error": f"the request line and headers are over this server's limit of "
                                      f"{self.max_header_bytes} bytes; send shorter headers, or raise "
                                      "--max-header-bytes"})
        self.transport.write(b"".join([STATUS_LINE[431], b"content-type: application/json\r\n",
                                       b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]))
        self.transport.close()


_on_message_begin = HttpToolsProtocol.on_message_begin
_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_message_complete = HttpToolsProtocol.on_message_complete
_data_received = HttpToolsProtocol.data_received
