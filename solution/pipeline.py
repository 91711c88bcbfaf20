"""The pipeline around the model: a reader pool ahead of it, a writer pool behind it.

cv2 and Pillow release the GIL while decoding, resizing and encoding, so the threads overlap with
the model for real. The sequential mode (LOWPOWER_SEQUENTIAL=1) runs the same code with an
executor that runs each job at once, to measure what the pools are worth.

Device-side code: Python 3.6 syntax; numpy and the standard library only.

Example (its last line skipped as a doctest: it needs a folder of images and a package's Segmenter):
    >>> timings = {'read': [], 'write': []}
    >>> segment_folder(['a.png'], 'IMG', 'OUT', segmenter, 256, False, timings)  # doctest: +SKIP
    ([], [])
"""
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .imagefiles import read_job, write_job


class InlineExecutor(object):
    """An executor that runs each job at once: the strictly sequential mode."""

    def submit(self, function, *args):
        future = Future()
        try:
            future.set_result(function(*args))
        except BaseException as error:  # noqa: BLE001
            future.set_exception(error)
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def make_pools(sequential, batch_size):
    """(readers, writers, read-ahead depth, write slots) for the pooled or the sequential mode.

    Four readers keep a batch and two of their own reads ahead of the model; two writers encode
    PNGs; the slots bound the masks held in memory while the writers catch up.
    """
    if sequential:
        return InlineExecutor(), InlineExecutor(), batch_size, threading.BoundedSemaphore(1)
    cores = os.cpu_count() or 1
    return (ThreadPoolExecutor(max_workers=min(4, cores)), ThreadPoolExecutor(max_workers=min(2, cores)),
            batch_size + 2 * min(4, cores), threading.BoundedSemaphore(4 * batch_size + 8))


class MaskWriter(object):
    """Submits masks to the writer pool, at most ``slots`` in flight; remembers every write.

    Args:
        pool: the writer executor.
        folder: the -o folder.
        slots: a BoundedSemaphore: a write waits for a free slot.
        seconds: the list the write jobs add their durations to.
        finished: the list the end time (``time.time()``) of every write is added to.
    """

    def __init__(self, pool, folder, slots, seconds, finished=None):
        self.pool, self.folder, self.slots, self.seconds = pool, folder, slots, seconds
        self.finished = [] if finished is None else finished
        self.written = []

    def submit(self, name, mask):
        self.slots.acquire()
        future = self.pool.submit(write_job, self.folder, name, mask, self.seconds)
        future.add_done_callback(self.done)
        self.written.append((name, future))

    def done(self, _):
        """A write ended: free its slot, note when (the first and last mask times of the stats)."""
        self.finished.append(time.time())
        self.slots.release()

    def failures(self):
        """[(name, reason)] of the writes that failed; waits for all of them."""
        return [(name, future.result()) for name, future in self.written if future.result()]


def read_ahead(pool, folder, names, size, depth, seconds):
    """Yield (name, image or None, reason) in name order, keeping ``depth`` reads in flight."""
    queue, pending = deque(), iter(names)

    def refill():
        while len(queue) < depth:
            name = next(pending, None)
            if name is None:
                return
            queue.append((name, pool.submit(read_job, folder, name, size, seconds)))

    refill()
    while queue:
        name, future = queue.popleft()
        image, reason = future.result()
        refill()
        yield name, image, reason


def segment_folder(names, input_dir, output_dir, segmenter, input_size, sequential, timings,
                   on_unreadable=None):
    """Read, segment and write every file; returns (unreadable names, [(name, write failure)]).

    An unreadable input gets an all-background mask of the same name (the referee expects one mask
    per input; background is the cheapest guess) and ``on_unreadable(name, reason)`` is called.

    Args:
        names: the inputs, in order.
        input_dir, output_dir: the -i and -o folders.
        segmenter: the timed model (its ``batch_size`` and ``output_size``).
        input_size: the model's input side.
        sequential: no pools (LOWPOWER_SEQUENTIAL).
        timings: {'read': [], 'write': []}: the pool jobs add their seconds; 'first_batch' (when the
            first batch was ready for the model) and 'written' (when each write ended) are added.
        on_unreadable: called with (name, reason) for each unreadable input, as it is found.
    """
    readers, writers, depth, slots = make_pools(sequential, segmenter.batch_size)
    blank = np.zeros((segmenter.output_size, segmenter.output_size), np.uint8)
    unreadable, batch_names, images = [], [], []
    with readers as read_pool, writers as write_pool:
        writer = MaskWriter(write_pool, output_dir, slots, timings['write'], timings.setdefault('written', []))
        for name, image, reason in read_ahead(read_pool, input_dir, names, input_size, depth, timings['read']):
            if image is None:
                if on_unreadable is not None:
                    on_unreadable(name, reason)
                unreadable.append(name)
                writer.submit(name, blank)
                continue
            batch_names.append(name)
            images.append(image)
            if len(images) == segmenter.batch_size:
                timings.setdefault('first_batch', time.time())
                for done, mask in zip(batch_names, segmenter(np.stack(images))):
                    writer.submit(done, mask)
                batch_names, images = [], []
        if images:
            timings.setdefault('first_batch', time.time())
            for done, mask in zip(batch_names, segmenter(np.stack(images))):
                writer.submit(done, mask)
    return unreadable, writer.failures()
