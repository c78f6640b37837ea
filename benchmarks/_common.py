"""Helpers shared by the benchmarks (not a benchmark: ``run.py`` only runs ``bench_*.py``).

Every benchmark pins its torch thread count with ``pinned_threads`` and prints it in its rows,
so ``make bench`` (all modules in one process) and a direct ``python benchmarks/bench_x.py``
measure the same thing, whatever an earlier module or torch's default left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def pinned_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` intra-op torch threads; restore the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def load() -> str:
    """The 1-minute load average and core count, to print next to timings of a shared machine."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"load {one:.2f} on {os.cpu_count()} cores"
