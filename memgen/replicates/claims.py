"""The claims scorecard: each of the paper's findings as a test on one run's summary metrics.

One function, :func:`score_claims`, serves a single ``memgen run`` and every seed of a
replicate. A claim reads a *statistic* (mostly a margin: the effect minus what it must beat),
compares it with a threshold from ``claims.*`` and gives a verdict: ``pass``, ``fail``, or
``n/a`` when the run has no such measurement (no pairs, no mixture, a stage switched off).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from omegaconf import DictConfig

PASS, FAIL, NA = "pass", "fail", "n/a"
DIRECTIONS = ("to_gen", "to_mem")
# Rates are differences of fractions (0.925 - 0.905 = 0.020000000000000018): a statistic within
# float noise of its threshold (relative, so tiny p-values keep their scale) counts as on it.
def _close(v: float, t: float) -> bool:
    return math.isclose(v, t, rel_tol=1e-9)


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t or _close(v, t), ">": operator.gt,
    "<=": lambda v, t: v <= t or _close(v, t), "<": operator.lt}


@dataclass(frozen=True)
class ClaimResult:
    """One claim on one run."""

    name: str
    statistic: str  # what the value is, in words
    value: float  # nan when the run lacks the measurement
    op: str  # how value is compared with threshold
    threshold: float
    detail: str  # the numbers behind the statistic

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.value):
            return NA
        return PASS if _OPS[self.op](self.value, self.threshold) else FAIL

    def row(self) -> dict[str, object]:
        return {"claim": self.name, "statistic": self.statistic, "value": self.value,
                "op": self.op, "threshold": self.threshold, "verdict": self.verdict,
                "detail": self.detail}


def _get(m: Mapping[str, float], key: str) -> float:
    value = m.get(key)
    return float(value) if value is not None else math.nan


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _controls(m: Mapping[str, float], prefix: str, direction: str) -> float:
    """The strongest control's success in one direction (nan without controls)."""
    start, end = f"{prefix}/{direction}/control_", "/success"
    values = [float(v) for k, v in m.items() if k.startswith(start) and k.endswith(end)
              and math.isfinite(float(v))]
    return max(values) if values else math.nan


def _steer_margin(m: Mapping[str, float], prefix: str) -> tuple[float, str]:
    """min over directions of (success - strongest control), and the numbers behind it."""
    margins, parts = [], []
    for direction in DIRECTIONS:
        success, control = _get(m, f"{prefix}/{direction}/success"), _controls(m, prefix,
                                                                               direction)
        margins.append(success - control)
        parts.append(f"{direction} {_fmt(success)} vs control {_fmt(control)}")
    finite = [x for x in margins if math.isfinite(x)]
    value = min(finite) if len(finite) == len(margins) else math.nan
    return value, "; ".join(parts)


def score_claims(metrics: Mapping[str, float], thresholds: DictConfig | Mapping[str, float]
                 ) -> list[ClaimResult]:
    """Every claim on one run's metrics, with ``claims.*`` thresholds."""
    m, c = metrics, thresholds
    mem, gen = _get(m, "kept/mem_rate"), _get(m, "kept/gen_rate")
    rows = [ClaimResult("behaviors", "min(kept MEM rate, kept GEN rate)", min(mem, gen), ">=",
                        c["min_behavior_rate"], f"MEM {_fmt(mem)}, GEN {_fmt(gen)}"),
            ClaimResult("pairs", "MEM/GEN pairs", _get(m, "pairs/n"), ">=", c["min_pairs"],
                        f"from {_fmt(_get(m, 'pairs/n_examples_with_pairs'))} examples")]
    max_r, chance = _get(m, "neurons/max_abs_r"), _get(m, "neurons/chance_max_abs_r_q95")
    rows.append(ClaimResult("differentiation", "max |r| - shuffled-label q95", max_r - chance,
                            ">", c["min_r_margin"], f"max |r| {_fmt(max_r)}, chance "
                            f"{_fmt(chance)}"))
    best = _get(m, "probe/best_acc")
    baselines = {name: _get(m, f"probe/baseline/{name}_acc")
                 for name in ("input_only", "shuffled", "majority")}
    strongest = max((v for v in baselines.values() if math.isfinite(v)), default=math.nan)
    rows.append(ClaimResult("prediction", "best probe - strongest baseline", best - strongest,
                            ">=", c["min_probe_margin"], f"best {_fmt(best)}; " + ", ".join(
                                f"{k} {_fmt(v)}" for k, v in baselines.items())))
    margin, detail = _steer_margin(m, "steer")
    rows.append(ClaimResult("steering", "success - strongest control (weaker direction)",
                            margin, ">=", c["min_steer_margin"], detail))
    rows.append(ClaimResult("side_effects", "clean accuracy drop (worse direction)",
                            _get(m, "side/clean_acc_drop"), "<=", c["max_clean_drop"],
                            f"clean accuracy {_fmt(_get(m, 'side/clean_acc'))}"))
    jac, expected = _get(m, "consistency/intra/jaccard"), _get(m,
                                                              "consistency/intra/expected_jaccard")
    rows.append(ClaimResult("consistency", "intra-task halves: overlap p-value",
                            _get(m, "consistency/intra/p_value"), "<=", c["max_p_value"],
                            f"Jaccard {_fmt(jac)} vs chance {_fmt(expected)}"))
    margin, detail = _steer_margin(m, "consistency/intra/transfer")
    rows.append(ClaimResult("transfer", "half B's neurons on half A: success - control",
                            margin, ">", c["min_transfer_margin"], detail))
    inter = {k: float(v) for k, v in m.items()
             if k.startswith("consistency/inter/") and k.endswith("/p_value")}
    worst = max(inter.values()) if inter else math.nan
    rows.append(ClaimResult("inter_task", "worst inter-task overlap p-value", worst, "<=",
                            c["max_p_value"], f"{len(inter)} task pairs" if inter
                            else "not a mixture"))
    return rows


def claim_metrics(rows: list[ClaimResult]) -> dict[str, float]:
    """``claims/<name>/pass`` (1 or 0) and ``claims/<name>/value`` for a single run."""
    out: dict[str, float] = {}
    for row in rows:
        if row.verdict != NA:
            out[f"claims/{row.name}/pass"] = float(row.verdict == PASS)
            out[f"claims/{row.name}/value"] = row.value
    return out


def format_scorecard(rows: list[ClaimResult]) -> str:
    """A short table for the terminal: claim, statistic, value, threshold, verdict."""
    lines = [f"{'claim':16s} {'statistic':48s} {'value':>8s}  {'threshold':>10s}  verdict"]
    for r in rows:
        lines.append(f"{r.name:16s} {r.statistic:48s} {_fmt(r.value):>8s}  "
                     f"{r.op + ' ' + format(r.threshold, 'g'):>10s}  {r.verdict}")
    return "\n".join(lines)
