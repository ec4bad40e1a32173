"""Dynamic batching on the event loop: rows of requests that arrive together are merged into one model
call of at most ``max_batch_size`` rows, waiting at most ``max_queue_delay`` seconds for company.

The model runs on the event-loop thread: for torchport's small tabular models a call costs microseconds,
less than handing the batch to another thread and back; while it runs, requests queue up for the next
batch. Scale out across cores with several server processes (``--workers``). REST and gRPC requests for a
model version go to the same Batcher."""
from __future__ import annotations

import asyncio
import time
from itertools import chain
from typing import Any, Callable

import numpy as np

from torchport.runtime.errors import InputError
from torchport.runtime.serve.stats import ModelStats


_now = time.perf_counter_ns


class Batcher:
    """Merges concurrent ``submit`` calls into calls of ``predict`` and hands each caller its own rows.

    ``max_batch_size`` 1 turns batching off: every request is its own model call."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 64,
                 max_queue_delay: float = 0.0, stats: ModelStats | None = None, dtype: Any = np.float32):
        if max_batch_size < 1:
            raise InputError(f"max_batch_size must be >= 1, got {max_batch_size}", parameter="max_batch_size")
        if max_queue_delay < 0:
            raise InputError(f"max_queue_delay must be >= 0, got {max_queue_delay}", parameter="max_queue_delay")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.stats = stats
        self.dtype = np.dtype(dtype)  # what the model takes: rows sent as lists become one array of it
        self._pending: list[tuple[np.ndarray, asyncio.Future, int]] = []
        self._pending_rows = 0
        self._timer: asyncio.Handle | None = None

    def submit(self, rows: np.ndarray | list) -> asyncio.Future:
        """Queue ``rows`` (a 2-D array of ``dtype``, or a list of equal-length rows of numbers); the future
        resolves to the model's output for them."""
        future = asyncio.get_running_loop().create_future()
        n = len(rows)
        if self._pending_rows + n > self.max_batch_size:
            self.flush()
        self._pending.append((rows, future, _now()))
        self._pending_rows += n
        if self.stats is not None:
            self.stats.queued += 1
        if self._pending_rows >= self.max_batch_size:
            self.flush()
        elif self._timer is None:
            loop = future.get_loop()
            self._timer = loop.call_later(self.max_queue_delay, self.flush) if self.max_queue_delay > 0 \
                else loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        """Run the model on everything queued now and resolve the callers' futures."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        stats = self.stats
        if stats is not None:
            stats.queued -= len(pending)
        started = _now()
        try:
            batch = _stack([p[0] for p in pending], self.dtype)
            stacked = _now()
            out = self.predict(batch)
        except Exception as e:  # the model failed for the whole batch: every caller gets the error
            for _, future, _ in pending:
                if not future.done():
                    future.set_exception(e)
            return
        done = _now()
        start = 0
        for rows, future, _ in pending:
            stop = start + len(rows)
            if not future.done():
                future.set_result(out[start:stop])
            start = stop
        if stats is not None:
            stats.batch(len(batch), [started - queued for _, _, queued in pending], stacked - started, done - stacked,
                        _now() - done, time.time_ns() // 1_000_000)


def _stack(parts: list, dtype: np.dtype) -> np.ndarray:
    """One matrix of ``dtype`` of the parts' rows, in order; lists of rows become one array in a single step."""
    if all(type(p) is list for p in parts):
        values = list(chain.from_iterable(chain.from_iterable(parts)))
        return np.array(values, dtype=dtype).reshape(-1, len(parts[0][0]))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([np.asarray(p, dtype=dtype) for p in parts])
