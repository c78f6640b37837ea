"""`make bench`: run every ``benchmarks/bench_*.py`` and print one table.

Each module exposes ``run() -> list[dict]`` with keys benchmark, measure, value, unit, target.
Ratios are measured against a baseline in the same process and run; nothing here is a test.
Pass names to run a subset: ``make bench ARGS="training steering"``. Each benchmark pins and
prints its own torch thread count (``_common.pinned_threads``), so this runner and a direct
``python benchmarks/bench_x.py`` measure the same thing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    sys.path[:0] = [str(HERE.parent), str(HERE)]  # memgen, and benchmarks/_common.py
    rows = []
    print(f"torch threads by default: {torch.get_num_threads()}; each benchmark pins its own",
          flush=True)
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if names and name not in names:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        started = time.perf_counter()
        print(f"running {path.name} ...", flush=True)
        rows += module.run()
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    width = max((len(r["benchmark"]) + len(r["measure"]) for r in rows), default=20) + 3
    print(f"\n{'benchmark / measure'.ljust(width)} {'value':>12}  {'unit':<12} target")
    for r in rows:
        label = f"{r['benchmark']} / {r['measure']}".ljust(width)
        print(f"{label} {r['value']:>12.4g}  {r['unit']:<12} {r['target']}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
