"""One torch thread for a stretch of code, and the caller's thread count back afterwards.

The course's models are tiny: one thread is as fast as several, and the thread count changes float rounding, so a
run that must repeat a committed one exactly (a live slice, a grader's recomputation) runs on one.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """``with one_thread(): ...`` runs the block on one torch thread and restores the thread count after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
