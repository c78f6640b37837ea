"""Memory of streaming statistics does not grow with the number of samples.

How it is measured: each size runs in a fresh Python subprocess (so the process-lifetime peak
``ru_maxrss`` belongs to that size alone). The child imports torch, records its peak RSS, then
streams ``n`` random samples of width ``WIDTH`` in batches of ``BATCH`` into a
``StreamingMoments`` and records the peak RSS again; the difference is the peak memory the
stream added (the accumulator plus the transient per-batch buffers: the float32 batch, its
float64 copy, the per-class sums). tracemalloc would miss torch's allocations, hence RSS.
The child runs under the default allocator (a ``MALLOC_*`` variable inherited from the caller is
removed), as a user would run it. The peak still includes torch's one-time lazy initialisation,
identical for both sizes. One torch thread, pinned in the child. The accumulator's own tensor
bytes are reported exactly as well.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

WIDTH, BATCH, SIZES = 2048, 512, (10_000, 100_000)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _child(n: int) -> dict:
    import time

    import torch

    from memgen.analysis.stats import StreamingMoments

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    acc = StreamingMoments()
    before = _peak_rss_bytes()
    start = time.perf_counter()
    for offset in range(0, n, BATCH):
        size = min(BATCH, n - offset)
        y = torch.rand(size, generator=gen) < 0.5
        x = torch.randn(size, WIDTH, generator=gen).add_(y[:, None])
        acc.update(x, y)
    acc.result("resid.1")
    return {"peak_delta": _peak_rss_bytes() - before, "state_bytes": acc.state_bytes(),
            "seconds": time.perf_counter() - start}


def _measure(n: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, __file__, "--child", str(n)], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    small, large = (_measure(n) for n in SIZES)
    mib = 2**20
    row = {"benchmark": "stats_memory", "target": ""}
    rows = []
    for n, m in zip(SIZES, (small, large), strict=True):
        rows += [
            {**row, "measure": f"peak_rss_delta n={n} width={WIDTH}",
             "value": round(m["peak_delta"] / mib, 2), "unit": "MiB"},
            {**row, "measure": f"accumulator_state n={n}", "value": m["state_bytes"],
             "unit": "bytes"},
            {**row, "measure": f"update_throughput n={n}",
             "value": round(n / m["seconds"]), "unit": "samples/s"},
        ]
    growth = (large["peak_delta"] - small["peak_delta"]) / max(small["peak_delta"], 1)
    rows.append({"benchmark": "stats_memory",
                 "measure": f"peak_rss_delta growth {SIZES[0]} -> {SIZES[1]} samples",
                 "value": round(100 * growth, 2), "unit": "%", "target": "< 10"})
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child(int(sys.argv[2]))))
    else:
        for r in run():
            print(r)
