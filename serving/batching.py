"""Dynamic batching for the HTTP server, the way Triton's dynamic batcher does it.

Concurrent requests' texts wait in one queue; a single dispatcher merges them into model calls
of at most `max_batch_size` texts. A call goes out as soon as it is full, or once the oldest
waiting text has waited `max_delay_ms`, or at once while the server drains. A request larger
than `max_batch_size` is split across calls; each caller gets exactly its own results, in its
order. Only requests with the same `key` (the decoding options, for translation) share a call.

The model function is blocking numpy/onnxruntime code: it runs in the executor given (one
worker thread: one call at a time, while the event loop keeps accepting and queueing), never on
the event loop. An exception in a call fails the requests that had texts in that call, and
only those. Standard library only.

    batcher = DynamicBatcher(lambda texts, key: model(texts), max_batch_size=32, max_delay_ms=5)
    batcher.start()
    results = await batcher.submit(["a", "b"])      # from any number of concurrent requests
    await batcher.close()                           # finishes everything already queued
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Optional

ModelFn = Callable[[list[str], Hashable], Sequence[Any]]
# on_batch(texts in the call, requests with texts in it, seconds the call took, whether it raised)
BatchHook = Callable[[int, int, float, bool], None]


class BatcherClosed(RuntimeError):
    """The batcher is draining or stopped: it takes no new requests."""


class BatchError(RuntimeError):
    """A model call failed; the requests in that call get this (its message is one line)."""


@dataclass(eq=False)
class _Request:
    texts: list[str]
    key: Hashable
    future: asyncio.Future
    arrived: float
    results: list = field(default_factory=list)
    taken: int = 0  # texts handed to a call so far
    done: int = 0  # results received so far

    @property
    def waiting(self) -> int:
        return len(self.texts) - self.taken


class DynamicBatcher:
    def __init__(
        self,
        model: ModelFn,
        max_batch_size: int = 32,
        max_delay_ms: float = 5.0,
        executor: Optional[Executor] = None,
        on_batch: Optional[BatchHook] = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.executor = executor
        self.on_batch = on_batch
        self._queue: list[_Request] = []
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._closing = False  # no new requests
        self._hurry = False  # no waiting for more texts: a call goes out as soon as the last one ends

    # ------------------------------------------------------------ public

    @property
    def queue_depth(self) -> int:
        """Texts waiting for a model call (not those in the call running now)."""
        return sum(request.waiting for request in self._queue)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        if self._task is not None:
            raise RuntimeError("the batcher is already started")
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="dynamic-batcher")

    async def submit(self, texts: Sequence[str], key: Hashable = None) -> list:
        """The model's results for `texts`, in their order, once the calls holding them ran."""
        if self._task is None or self._closing:
            raise BatcherClosed("the server is shutting down" if self._closing else "the batcher is not started")
        texts = list(texts)
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(texts, key, loop.create_future(), time.monotonic(), [None] * len(texts))
        self._queue.append(request)
        self._wakeup.set()
        return await request.future

    def hurry(self) -> None:
        """Stop waiting for more texts (the server is draining): queued texts go out at once.
        Requests are still taken: those already received by the server must be answered."""
        self._hurry = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def close(self) -> None:
        """Take no new requests, run every queued one (without waiting for more), then stop."""
        if self._task is None:
            return
        self._closing = self._hurry = True
        self._wakeup.set()
        await self._task

    # ------------------------------------------------------------ dispatcher

    def _pending(self, key: Hashable) -> int:
        return sum(request.waiting for request in self._queue if request.key == key)

    def _drop_abandoned(self) -> None:
        """Requests whose caller went away (cancelled) are not run."""
        self._queue = [request for request in self._queue if not request.future.done()]

    async def _dispatch(self) -> None:
        while True:
            self._drop_abandoned()
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            oldest = self._queue[0]
            deadline = oldest.arrived + self.max_delay
            while not self._hurry and self._pending(oldest.key) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            await self._run(self._take(oldest.key))

    def _take(self, key: Hashable) -> list[tuple[_Request, int, int]]:
        """Up to max_batch_size queued texts of `key`, oldest first: (request, start, stop) slices."""
        room, batch = self.max_batch_size, []
        for request in self._queue:
            if room == 0:
                break
            if request.key != key or request.future.done():
                continue
            count = min(room, request.waiting)
            batch.append((request, request.taken, request.taken + count))
            request.taken += count
            room -= count
        self._queue = [request for request in self._queue if request.waiting]
        return batch

    async def _run(self, batch: list[tuple[_Request, int, int]]) -> None:
        texts = [text for request, start, stop in batch for text in request.texts[start:stop]]
        key = batch[0][0].key
        started, failed = time.perf_counter(), True
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.model, texts, key)
            results = list(results)
            if len(results) != len(texts):
                raise BatchError(f"the model returned {len(results)} results for {len(texts)} texts")
            failed = False
        except Exception as err:  # the model's own error types: fail this call's requests only
            failure = err if isinstance(err, BatchError) else BatchError(one_line(err))
            for request, _, _ in batch:
                if not request.future.done():
                    request.future.set_exception(failure)
            self._queue = [request for request in self._queue if not request.future.done()]
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(len(texts), len(batch), time.perf_counter() - started, failed)
        offset = 0
        for request, start, stop in batch:
            request.results[start:stop] = results[offset : offset + stop - start]
            offset += stop - start
            request.done += stop - start
            if request.done == len(request.texts) and not request.future.done():
                request.future.set_result(request.results)


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`: what a response body may say about an exception."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
