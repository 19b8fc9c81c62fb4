"""Micro-batching: requests that arrive within a few milliseconds of each other share one forward pass.

One background thread owns the model. Each request hands over its texts with an asyncio future; the
thread takes the first waiting request, keeps collecting for up to max_wait_ms (or until max_batch
texts), runs the model once and hands each request its slice of the results.

The work waiting or in flight is bounded in texts and in bytes: a request that would go over either bound
is refused at once with QueueFull (HTTP 503 + Retry-After) instead of queueing behind minutes of work.
A request that arrives while nothing is pending is always taken: the per-request limits bound it.
"""
from __future__ import annotations

import asyncio
import math
import queue
import threading
import time


class QueueFull(Exception):
    def __init__(self, pending: int, retry_after: int):
        super().__init__(f"{pending} texts waiting or in flight")
        self.pending, self.retry_after = pending, retry_after


class MicroBatcher:
    def __init__(self, fn, max_batch: int = 32, max_wait_ms: float = 5.0, threads: int | None = None,
                 max_queue: int | None = None, max_queue_bytes: int | None = None):
        self.fn, self.max_batch, self.max_wait, self.threads = fn, max_batch, max_wait_ms / 1000, threads
        self.max_queue, self.max_queue_bytes = max_queue or 4 * max_batch, max_queue_bytes or 2**62
        self.q: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.pending_texts = self.pending_bytes = 0  # waiting or in flight; guarded by lock
        self.busy_s = 0.0
        self.stats = {"requests": 0, "batches": 0, "texts": 0, "largest_batch": 0, "rejected": 0}
        self.thread = threading.Thread(target=self._loop, name="tunesmith-batcher", daemon=True)
        self.thread.start()

    def _retry_after(self) -> int:
        # The time the pending texts take at the speed measured so far (50 ms a text before any), 1-60 s.
        per_text = self.busy_s / self.stats["texts"] if self.stats["texts"] else 0.05
        return min(60, max(1, math.ceil(self.pending_texts * per_text)))

    async def submit(self, items: list, nbytes: int = 0):
        with self.lock:
            if self.pending_texts and (self.pending_texts + len(items) > self.max_queue
                                       or self.pending_bytes + nbytes > self.max_queue_bytes):
                self.stats["rejected"] += 1
                raise QueueFull(self.pending_texts, self._retry_after())
            self.pending_texts += len(items)
            self.pending_bytes += nbytes
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.q.put((items, nbytes, loop, fut))
        return await fut

    def close(self):
        self.q.put(None)
        self.thread.join(timeout=10)

    def _collect(self, first) -> tuple[list, bool]:
        batch, n, deadline = [first], len(first[0]), time.monotonic() + self.max_wait
        while n < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                nxt = self.q.get(timeout=left)
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
            n += len(nxt[0])
        return batch, False

    def _loop(self):
        if self.threads:
            import torch

            # Measured on a 2-core machine under load 20: one short text took 3.4 s with 2 threads, 0.28 s with 1.
            torch.set_num_threads(self.threads)
        stop = False
        while not stop:
            first = self.q.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            items = [x for b in batch for x in b[0]]
            t0 = time.perf_counter()
            try:
                results, error = self.fn(items), None
            except Exception as e:  # one bad batch must not kill the worker; its requests get the error
                results, error = None, e
            self.busy_s += time.perf_counter() - t0
            with self.lock:  # counted here, not when a request returns: a client that left still cost this work
                self.pending_texts -= len(items)
                self.pending_bytes -= sum(b[1] for b in batch)
            self.stats["requests"] += len(batch)
            self.stats["batches"] += 1
            self.stats["texts"] += len(items)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
            start = 0
            for its, _, loop, fut in batch:
                part = None if error else results[start:start + len(its)]
                start += len(its)
                loop.call_soon_threadsafe(_resolve, fut, part, error)


def _resolve(fut, result, error):
    if fut.done():  # the client went away
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
