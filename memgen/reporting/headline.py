"""The headline of a run in a few lines, from its metrics alone.

One text serves three readers: the terminal after ``memgen run`` (about 20 lines), the run's
description in the MLflow UI, and the top of ``report.html``. Built from the metrics dict, so a
finished run's numbers (``client.get_run(...).data.metrics``) give the same lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from memgen.replicates.claims import FAIL, NA, PASS, ClaimResult

DIRECTIONS = (("to_gen", "MEM->GEN"), ("to_mem", "GEN->MEM"))
# what a sweep or replicate parent shows of its children (a best trial's, an aggregate's):
# the results a reader compares, not the hundreds of per-site numbers behind them
KEY_METRICS = ("steer/min_success", "steer/max_control_success", "steer/to_gen/success",
               "steer/to_mem/success", "side/clean_acc_drop", "probe/best_acc",
               "kept/mem_rate", "kept/gen_rate", "val/best_behavior_balance", "pairs/n",
               "consistency/intra/jaccard", "steer/k", "steer/tuned/alpha")


def _get(m: Mapping[str, float], key: str) -> float:
    value = m.get(key)
    return float(value) if value is not None else math.nan


def pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f}%"


def num(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def behavior_lines(m: Mapping[str, float]) -> list[str]:
    lines = []
    if "kept/mem_rate" in m:
        epoch = _get(m, "kept/epoch")
        at = f"epoch {int(epoch)}, " if math.isfinite(epoch) else ""
        lines.append(f"kept checkpoint ({at}best {_best_key(m)} {num(_best(m))}): "
                     f"MEM {pct(_get(m, 'kept/mem_rate'))}  GEN {pct(_get(m, 'kept/gen_rate'))}"
                     f"  OTHER {pct(_get(m, 'kept/other_rate'))} on validation conflicts")
    if "behavior/n_variants" in m:
        lines.append(f"analysis set: {int(_get(m, 'behavior/n_variants'))} variants, "
                     f"MEM {pct(_get(m, 'behavior/mem_rate'))}  GEN "
                     f"{pct(_get(m, 'behavior/gen_rate'))}  OTHER "
                     f"{pct(_get(m, 'behavior/other_rate'))}")
    if "pairs/n" in m:
        lines.append(f"pairs: {int(_get(m, 'pairs/n'))} from "
                     f"{int(_get(m, 'pairs/n_examples_with_pairs'))} examples "
                     f"(selection {int(_get(m, 'pairs/n_selection_items'))} items, evaluation "
                     f"{int(_get(m, 'pairs/n_evaluation_items'))})")
    return lines


def _best_key(m: Mapping[str, float]) -> str:
    keys = [k for k in m if k.startswith("val/best_")]
    return keys[0].removeprefix("val/best_") if keys else "behavior_balance"


def _best(m: Mapping[str, float]) -> float:
    keys = [k for k in m if k.startswith("val/best_")]
    return _get(m, keys[0]) if keys else math.nan


def probe_line(m: Mapping[str, float]) -> list[str]:
    if "probe/best_acc" not in m:
        return []
    return [f"probe: best acc {num(_get(m, 'probe/best_acc'))} vs input-only "
            f"{num(_get(m, 'probe/baseline/input_only_acc'))}, shuffled "
            f"{num(_get(m, 'probe/baseline/shuffled_acc'))}, majority "
            f"{num(_get(m, 'probe/baseline/majority_acc'))}; top-k neurons "
            f"{num(_get(m, 'probe/topk_acc'))}"
            + (f"; answer lens {num(_get(m, 'probe/lens/best_acc'))}"
               if "probe/lens/best_acc" in m else "")]


def steering_lines(m: Mapping[str, float]) -> list[str]:
    lines = []
    per_direction = "steer/tuned/to_gen/alpha" in m  # analysis.steering.tune_per_direction
    if per_direction:
        lines.append("steering, each direction at its own k and alpha (tuned on the selection "
                     "split):")
    elif "steer/tuned/alpha" in m:
        lines.append(f"steering at k={int(_get(m, 'steer/tuned/k'))}, alpha "
                     f"{_get(m, 'steer/tuned/alpha'):g} (tuned on the selection split):")
    for direction, label in DIRECTIONS:
        key = f"steer/{direction}"
        if f"{key}/success" not in m:
            continue
        if per_direction and f"{key}/alpha" in m:
            label = f"{label} (k={int(_get(m, f'{key}/k'))}, alpha {_get(m, f'{key}/alpha'):g})"
        controls = sorted({k.split("/")[2] for k in m
                           if k.startswith(f"{key}/control_") and k.endswith("/success")})
        shown = ", ".join(f"{c.removeprefix('control_')} {pct(_get(m, f'{key}/{c}/success'))}"
                          for c in controls)
        lines.append(f"  {label} {pct(_get(m, f'{key}/success'))} "
                     f"[{pct(_get(m, f'{key}/ci_low'))}, {pct(_get(m, f'{key}/ci_high'))}]"
                     + (f"  controls: {shown}" if shown else ""))
    if "side/clean_acc_drop" in m:
        lines.append(f"  clean accuracy {pct(_get(m, 'side/clean_acc'))} -> "
                     f"{pct(_get(m, 'side/clean_acc_steered'))} (drop "
                     f"{100 * _get(m, 'side/clean_acc_drop'):.1f} points, KL "
                     f"{num(_get(m, 'side/kl'), 3)})")
    return lines


def consistency_line(m: Mapping[str, float]) -> list[str]:
    key = "consistency/intra"
    if f"{key}/jaccard" not in m:
        return []
    return [f"consistency (halves): jaccard {num(_get(m, f'{key}/jaccard'))} vs chance "
            f"{num(_get(m, f'{key}/expected_jaccard'), 3)} (p={_get(m, f'{key}/p_value'):.2g}),"
            f" r correlation {num(_get(m, f'{key}/r_corr'))}"]


def claims_line(claims: Sequence[ClaimResult] | None) -> list[str]:
    if not claims:
        return []
    by = {v: [c.name for c in claims if c.verdict == v] for v in (PASS, FAIL, NA)}
    text = f"claims: {len(by[PASS])}/{len(claims)} pass"
    if by[FAIL]:
        text += f"; fail: {', '.join(by[FAIL])}"
    if by[NA]:
        text += f"; n/a: {', '.join(by[NA])}"
    return [text]


def headline(metrics: Mapping[str, float], claims: Sequence[ClaimResult] | None = None
             ) -> list[str]:
    """Behaviors, pairs, probe vs baselines, steering vs controls, clean drop, consistency,
    claims: what a researcher reads first."""
    m = metrics
    return (behavior_lines(m) + probe_line(m) + steering_lines(m) + consistency_line(m)
            + claims_line(claims))


def description(metrics: Mapping[str, float], claims: Sequence[ClaimResult] | None = None,
                title: str = "") -> str:
    """The run's description (``mlflow.note.content``, markdown): the headline as a list."""
    lines = headline(metrics, claims)
    body = "\n".join(f"- {line.strip()}" for line in lines) or "- (no results)"
    note = ("\n\n`kept/*` are the kept checkpoint's rates (the one analysed); `val/*` are "
            "per-epoch curves. Full results: report.html") if "kept/mem_rate" in metrics else ""
    return (f"**{title}**\n\n" if title else "") + body + note
