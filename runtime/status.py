"""A long command's status line on stderr, kept up to date from a background thread, so that something is
said at least every two seconds whatever the command is doing (importing torch, reading a file, training,
exporting): on a terminal one line rewritten in place, elsewhere (a log, a pipe) a line every two seconds.
Nothing is shown for the first second, so quick commands and one-line errors stay as they are."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

FIRST_AFTER = 1.0      # seconds before anything is shown
EVERY = 1.0            # a line this often afterwards: at least one every 2 s even when the process is starved (a terminal redraws every TERMINAL_EVERY)
TERMINAL_EVERY = 0.5


class Status:
    """``set(text)`` changes what the line says; ``clear()`` before printing anything else on stderr
    (``say``) and ``stop()`` at the end. ``enabled`` False makes every call a no-op."""

    def __init__(self, prefix: str, stream: TextIO | None = None, enabled: bool = True):
        self.prefix, self.stream, self.enabled = prefix, stream or sys.stderr, enabled
        self._text, self._start = "starting", time.monotonic()
        self._lock = threading.Lock()
        self._terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torchport-status", daemon=True)
        if enabled:
            self._thread.start()

    def set(self, text: str) -> None:
        with self._lock:
            self._text = text

    def _line(self) -> str:
        return f"{self.prefix}: [{time.monotonic() - self._start:5.1f} s] {self._text}"

    def _run(self) -> None:
        if self._done.wait(FIRST_AFTER):
            return
        while True:
            with self._lock:
                if self._terminal:
                    self.stream.write("\r\x1b[K" + self._line())
                    self._shown = True
                else:
                    self.stream.write(self._line() + "\n")
                self.stream.flush()
            if self._done.wait(TERMINAL_EVERY if self._terminal else EVERY):
                return

    def clear(self) -> None:
        """Take a terminal's line away (it comes back on the next redraw)."""
        with self._lock:
            if self._terminal and self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def say(self, text: str) -> None:
        """Print a line on the stream without mangling the status line."""
        with self._lock:
            if self._terminal and self._shown:
                self.stream.write("\r\x1b[K")
                self._shown = False
            self.stream.write(text + "\n")
            self.stream.flush()

    def stop(self) -> None:
        if not self.enabled:
            return
        self._done.set()
        self._thread.join()
        self.clear()
