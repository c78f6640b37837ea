"""The research loop's wall times (issue 25): train once, then re-analyse without training.

Each step is the command a researcher types, in a subprocess on its own temporary store, timed
from start to exit:

(a) ``memgen replicate replicate.workers=2``: the default experiment over seeds 0-4;
(b) the same 5 seeds as 5 sequential ``memgen run seed=N``, back to back (torch's default
    thread count, i.e. every core for one run at a time);
(c) ``memgen replicate replicate.models=<(a)'s parent> replicate.workers=2``: every seed's
    model of (a) analysed again, no training.

Reported: the three wall times, (a) / (b) (what the replicate's workers buy), (c) / (a)
(target <= 0.35) and (a) against 10 minutes, plus (a)'s mean ``time/<stage>_s`` over seeds,
slowest first (where a run's time goes). Thread split: ``replicate.workers=2`` splits the
cores (``trainer.num_threads`` = cores / 2 per seed). Run it on a quiet machine: each step
trains or analyses for minutes. ``--quick`` runs a seconds-long config over 2 seeds (a smoke
test of this script, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2, 3, 4]
QUICK = ["experiment=quick", "task.n_train=200", "model.n_layer=1", "model.n_embd=32",
         "model.n_head=2", "analysis.steering.tune_alpha=[3.0]",
         "analysis.steering.tune_top_fraction=[0.1]", "analysis.consistency_seeds=[]"]


def memgen(args: list[str], store: Path) -> float:
    """Wall seconds of ``memgen <args>`` on ``store``; a failure stops the benchmark."""
    cmd = [sys.executable, "-m", "memgen.cli", *args,
           f"tracking.uri=sqlite:///{store}/mlflow.db", f"output_dir={store / 'outputs'}",
           "tracking.log_checkpoints=false", "trainer.progress_bar=false"]
    env = os.environ | {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return wall


def replicate_parent(store: Path) -> tuple[str, dict[str, float]]:
    """The newest replicate parent of ``store`` and its metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("memgen")
    runs = client.search_runs([exp.experiment_id],
                              filter_string="tags.`memgen.command` = 'replicate'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id, dict(runs[0].data.metrics)


def run(quick: bool = False) -> list[dict]:
    from _common import load

    seeds = SEEDS[:2] if quick else SEEDS
    extra = QUICK if quick else []
    seed_list = f"replicate.seeds=[{','.join(map(str, seeds))}]"
    where = load() + (", --quick" if quick else "")
    with tempfile.TemporaryDirectory(prefix="memgen-bench-loop-") as tmp:
        replicate_store, runs_store = Path(tmp) / "replicate", Path(tmp) / "runs"
        a = memgen(["replicate", seed_list, "replicate.workers=2", *extra], replicate_store)
        parent, parent_metrics = replicate_parent(replicate_store)
        b = sum(memgen(["run", f"seed={seed}", *extra], runs_store) for seed in seeds)
        c = memgen(["replicate", f"replicate.models={parent}", "replicate.workers=2", *extra],
                   replicate_store)
    n = len(seeds)
    rows = [
        {"benchmark": "loop", "measure": f"(a) {n}-seed replicate, 2 workers ({where})",
         "value": round(a, 1), "unit": "s", "target": "<= 600" if not quick else ""},
        {"benchmark": "loop", "measure": f"(b) {n} sequential memgen run, back to back",
         "value": round(b, 1), "unit": "s", "target": ""},
        {"benchmark": "loop", "measure": "(c) replicate.models= re-analysis of (a), 2 workers",
         "value": round(c, 1), "unit": "s", "target": ""},
        # what splitting the cores between seeds buys over one run at a time on every core
        # (about nothing on 2 cores: the tiny default scales to 2 threads)
        {"benchmark": "loop", "measure": "(a) / (b)", "value": a / b, "unit": "ratio",
         "target": ""},
        {"benchmark": "loop", "measure": "(c) / (a)", "value": c / a, "unit": "ratio",
         "target": "<= 0.35"},
    ]
    stages = {k.removesuffix("/mean"): v for k, v in parent_metrics.items()
              if k.startswith("time/") and k.endswith("/mean")}
    for key, value in sorted(stages.items(), key=lambda kv: -kv[1]):
        rows.append({"benchmark": "loop", "measure": f"(a) mean {key} per seed",
                     "value": round(value, 2), "unit": "s", "target": ""})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long config over 2 seeds: a smoke test, not a measure")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
    for row in run(args.quick):
        print(row)
