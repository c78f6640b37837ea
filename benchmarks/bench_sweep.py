"""Steering sweeps: what a trial adds to the steering evaluation, and a whole sweep's wall time.

The model has the default shape (``model=gpt2_tiny``: 4 layers, width 128, 4 heads) and shows
both behaviors. Training one that far takes many minutes on a shared 2-core CPU, so it is
built: a 2-layer, width-64 GPT-2 is fitted to designed MEM/GEN targets as in the sweep tests
(``tests/helpers_sweep.py``), then :func:`widen` copies it exactly into the default shape
(every hidden vector duplicated, two identity blocks on top): same greedy outputs, same pairs,
default-sized compute. Timings depend on shapes and item counts, not on how weights were found.
Task and analysis settings are the defaults except ``task.n_conflict`` (``CONFLICT``, 100 of
400, to keep the fit short); clean inputs stay at the default 200.

1. Trial overhead: on one loaded model in this process, a full sweep trial (Optuna ask/tell on
   SQLite, the trial config through ``to_schema``, an MLflow child run with its config, params,
   metrics and end state) against ``run_steering`` called directly with the same config, sides
   interleaved, median of ``ROUNDS`` each. Target: ratio <= 1.2.
2. A ``--trials`` (default 50) trial ``memgen sweep sweep=steering`` from the command's own
   start to its end (model loading, labels, activations, statistics once; every trial; the
   parent's tables and figures), one worker, one torch thread.
3. What ``analysis.steering.tune`` adds to ``memgen run``'s steering stage: picking (k, alpha)
   on the selection split over the default 3 x 4 grid, then steering the evaluation split
   once, against steering it once at a fixed setting; median of ``TUNE_ROUNDS`` each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memgen.analysis.stages import run_steering, tune_steering
from memgen.commands.sweep import plan, sweep
from memgen.config import compose
from memgen.config.adapter import settings_from_config
from memgen.sweeps.space import trial_config
from memgen.sweeps.storage import open_storage
from memgen.sweeps.trials import SteeringEvaluator, TrialObjective
from memgen.tracking.run import tracked_run
from memgen.training.models import build_scratch_model
from tests.helpers_sweep import fit_designed, log_model_run, store_overrides

ROUNDS = 5
TUNE_ROUNDS = 3
CONFLICT = 100
SMALL = {"model.n_layer": 2, "model.n_embd": 64, "model.n_head": 2}


@torch.no_grad()
def widen(small, big) -> None:
    """Make ``big`` (twice the width and heads, at least as deep) compute what ``small`` does.

    Hidden vectors become ``[h, h]``: LayerNorm statistics are unchanged, every linear map
    ``W`` becomes ``[[W, W], [W, W]] / 2`` (its output duplicated; heads 3-4 copy heads 1-2),
    extra blocks add zero (output projections zeroed), and the final LayerNorm is halved so
    that the tied ``lm_head`` (``[wte, wte]``) gives the same logits.
    """
    def dup(v):
        return torch.cat([v, v], dim=-1)

    def block(w):  # Conv1D weight [in, out] -> [2 in, 2 out]
        return torch.cat([torch.cat([w, w], 1), torch.cat([w, w], 1)], 0) / 2

    s, b = small.transformer, big.transformer
    b.wte.weight.copy_(dup(s.wte.weight))
    b.wpe.weight.copy_(dup(s.wpe.weight))
    for i, bb in enumerate(b.h):
        if i >= len(s.h):
            for proj in (bb.attn.c_proj, bb.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
            continue
        sb = s.h[i]
        for name in ("ln_1", "ln_2"):
            getattr(bb, name).weight.copy_(dup(getattr(sb, name).weight))
            getattr(bb, name).bias.copy_(dup(getattr(sb, name).bias))
        q, k, v = sb.attn.c_attn.weight.chunk(3, dim=1)
        bb.attn.c_attn.weight.copy_(torch.cat([block(q), block(k), block(v)], 1))
        bb.attn.c_attn.bias.copy_(torch.cat([dup(x) for x in sb.attn.c_attn.bias.chunk(3)]))
        for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            src, dst = sb.get_submodule(name), bb.get_submodule(name)
            dst.weight.copy_(block(src.weight))
            dst.bias.copy_(dup(src.bias))
    b.ln_f.weight.copy_(dup(s.ln_f.weight) / 2)
    b.ln_f.bias.copy_(dup(s.ln_f.bias) / 2)


def build_run(root: Path) -> str:
    """The designed small model, widened to the default shape, logged as a ``memgen run``."""
    keys = {"task.n_conflict": CONFLICT, "trainer.num_threads": 1}
    small_cfg = compose(store_overrides(root, **(keys | SMALL)))
    task, tokenizer, small, loss = fit_designed(small_cfg, max_steps=600, clean=False)
    cfg = compose(store_overrides(root, **keys))
    big = build_scratch_model(cfg, tokenizer).eval()
    widen(small, big)
    ids = tokenizer([ex.prompt for ex in task.clean_examples()[:16]], return_tensors="pt",
                    padding=True, add_special_tokens=False)
    assert torch.allclose(small(**ids).logits, big(**ids).logits, atol=1e-4)
    return log_model_run(cfg, task, tokenizer, big, **{"fixture/loss": loss})
POINT = {"analysis.steering.top_fraction": 0.05, "analysis.steering.alpha": 3.0}


def _sweep_cfg(root: Path, run_id: str, trials: int, name: str):
    return compose(store_overrides(root, **{
        "sweep": "steering", "sweep.run_id": run_id, "sweep.n_trials": trials,
        "sweep.study_name": name, "trainer.num_threads": 1, "trainer.progress_bar": "false"}))


def trial_overhead(root: Path, run_id: str) -> list[dict]:
    cfg = _sweep_cfg(root, run_id, 1, "overhead")
    p = plan(cfg)
    evaluator = SteeringEvaluator(p.base, run_id)
    point = settings_from_config(trial_config(p.base, POINT))

    def steer_once() -> None:
        run_steering(evaluator.subject, point, evaluator.neurons,
                     evaluator.behaviors.evaluation, evaluator.clean, evaluator.baseline)

    storage = open_storage(p.storage)
    study = optuna.create_study(study_name=p.study_name, storage=storage,
                                directions=[o.direction for o in p.objectives])
    direct, trial = [], []
    with tracked_run(p.base, "sweep", run_name="overhead") as parent:
        objective = TrialObjective(p.base, p.params, p.objectives, evaluator, parent.run_id,
                                   p.study_name)
        steer_once()  # warm
        for _ in range(ROUNDS):
            start = time.perf_counter()
            steer_once()
            direct.append(time.perf_counter() - start)
            study.enqueue_trial(POINT)
            start = time.perf_counter()
            study.optimize(objective, n_trials=1)
            trial.append(time.perf_counter() - start)
    d, t = statistics.median(direct), statistics.median(trial)
    n_eval = len(evaluator.behaviors.evaluation.items)
    row = {"benchmark": "sweep", "unit": "s", "target": ""}
    return [
        {**row, "measure": f"run_steering direct (default model, {n_eval} evaluation items, "
                           f"{len(evaluator.clean)} clean, 3 controls)", "value": round(d, 3)},
        {**row, "measure": "steering trial (Optuna + config + MLflow child run)",
         "value": round(t, 3)},
        {"benchmark": "sweep", "measure": "trial / direct steering evaluation",
         "value": round(t / d, 3), "unit": "ratio", "target": "<= 1.2"},
    ]


def tuning_cost(root: Path, run_id: str) -> list[dict]:
    p = plan(_sweep_cfg(root, run_id, 1, "tuning"))
    ev = SteeringEvaluator(p.base, run_id)
    base = settings_from_config(p.base)
    fixed_settings = settings_from_config(trial_config(p.base, POINT))

    def fixed() -> None:
        run_steering(ev.subject, fixed_settings, ev.neurons, ev.behaviors.evaluation, ev.clean,
                     ev.baseline)

    def tuned() -> None:
        tuning = tune_steering(ev.subject, base, ev.neurons, ev.behaviors.selection, ev.clean,
                               ev.baseline)
        picked = base.with_steering(base.steering.at(tuning.top_fraction, tuning.alpha))
        run_steering(ev.subject, picked, ev.neurons, ev.behaviors.evaluation, ev.clean,
                     ev.baseline)

    times: dict[str, list[float]] = {"fixed": [], "tuned": []}
    for _ in range(TUNE_ROUNDS):
        for name, fn in (("fixed", fixed), ("tuned", tuned)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    f, t = statistics.median(times["fixed"]), statistics.median(times["tuned"])
    s = p.base.analysis.steering
    cells = len(s.tune_top_fraction) * len(s.tune_alpha)
    n_sel, n_eval = len(ev.behaviors.selection.items), len(ev.behaviors.evaluation.items)
    row = {"benchmark": "sweep", "unit": "s", "target": ""}
    return [
        {**row, "measure": f"steering stage at a fixed setting ({n_eval} evaluation items)",
         "value": round(f, 2)},
        {**row, "measure": f"steering stage tuned ({cells} settings on {n_sel} selection "
                           f"items, then the evaluation split once)", "value": round(t, 2)},
        {"benchmark": "sweep", "measure": "tuned / fixed steering stage", "value": round(t / f, 2),
         "unit": "ratio", "target": ""},
    ]


def sweep_wall(root: Path, run_id: str, trials: int) -> list[dict]:
    cfg = _sweep_cfg(root, run_id, trials, f"wall-{trials}")
    start = time.perf_counter()
    metrics, objects = sweep(cfg)
    wall = time.perf_counter() - start
    durations = [t.duration.total_seconds() for t in objects["study"].trials if t.duration]
    return [
        {"benchmark": "sweep", "measure": f"{trials}-trial steering sweep wall time (default "
         f"model, 1 worker, 1 thread)", "value": round(wall, 1), "unit": "s", "target": ""},
        {"benchmark": "sweep", "measure": "mean trial time in that sweep",
         "value": round(statistics.mean(durations), 3), "unit": "s", "target": ""},
        {"benchmark": "sweep", "measure": "complete trials in that sweep",
         "value": metrics["sweep/n_complete"], "unit": "trials", "target": f"== {trials}"},
    ]


def run(trials: int = 50) -> list[dict]:
    from _common import pinned_threads

    with pinned_threads(1):
        return _run(trials)


def _run(trials: int) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="memgen-bench-sweep-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        run_id = build_run(root)
        built = time.perf_counter() - start
        rows = [{"benchmark": "sweep", "measure": "build the designed default-shaped model run",
                 "value": round(built, 1), "unit": "s", "target": ""}]
        rows += trial_overhead(root, run_id)
        rows += tuning_cost(root, run_id)
        rows += sweep_wall(root, run_id, trials)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    for r in run(args.trials):
        print(r)
