"""Kinds side by side: evaluate an intervention with its matched controls, tune kind x positions
x sites x k x alpha on the selection split (pruned), and the GEN->MEM ceiling.

Tuning stays cheap by pruning: every candidate (kind, positions, sites) is scored at one middle
(k, alpha) cell; only the ``keep`` best-scoring candidates are refined over the whole k x alpha
grid (alpha is fixed at 1 for interchange and ablate). A cell's score is today's: the weaker
direction's success minus the strongest control's and the clean drop, and the pick is the most
successful cell within the budget (``tuning.best_cell``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.sites import site_width
from memgen.analysis.steering.evaluation import (
    SOURCE,
    TARGET,
    CleanBaseline,
    SideEffects,
    SteeringResult,
    Transitions,
    _accuracy,
    last_token_logprobs,
)
from memgen.analysis.steering.forced_labels import outputs_with
from memgen.analysis.steering.intervene import (
    NO_ALPHA,
    Intervention,
    directions_of,
    intervene,
)
from memgen.analysis.steering.margin import margins
from memgen.analysis.steering.tuning import best_cell, within_budget
from memgen.tasks.base import Behavior, Example

Candidate = tuple[str, str, str]  # kind, positions, sites
DIRECTIONS = ("to_gen", "to_mem")
UNPICKABLE = ("interchange", "ablate")  # reported beside the others, never the run's pick
Maker = Callable[[str, str, float], tuple[Intervention, dict[str, Intervention]]]


def _transitions(direction: str, after: Sequence[Behavior]) -> Transitions:
    return Transitions(direction=direction, n=len(after),
                       to_target=sum(b == TARGET[direction] for b in after),
                       unchanged=sum(b == SOURCE[direction] for b in after),
                       other=sum(b == Behavior.OTHER for b in after))


def _side(subject: Subject, clean: Sequence[Example], main: Intervention, alpha: float,
          direction: str, positions: str, decoding: Decoding, baseline: CleanBaseline
          ) -> SideEffects:
    outputs = outputs_with(subject, main, alpha, direction, positions, clean, decoding, "gen")
    prompts = [ex.prompt for ex in clean]
    with intervene(subject.model, main, alpha, direction, positions):
        steered = last_token_logprobs(subject.model, subject.tokenizer, prompts,
                                      decoding.batch_size)
    p = baseline.logprobs.exp()
    kl = torch.where(p > 0, p * (baseline.logprobs - steered), torch.zeros_like(p)).sum(-1)
    return SideEffects(direction=direction, n=len(clean), clean_acc=baseline.acc,
                       clean_acc_steered=_accuracy(subject.task, clean, outputs),
                       kl=float(kl.clamp(min=0).mean()))


def evaluate_intervention(subject: Subject, examples: Sequence[Example],
                          labels: Sequence[Behavior], main: Intervention, alpha: float,
                          positions: str, controls: Mapping[str, Intervention] | None = None, *,
                          decoding: Decoding = Decoding(),
                          clean: Sequence[Example] | None = None,
                          baseline: CleanBaseline | None = None,
                          with_margin: bool = False,
                          directions: Sequence[str] | None = None) -> SteeringResult:
    """Steer each direction's source items with ``main`` and each control (interchange: only
    items every method has a source for). ``items`` gets ``margin_before``/``margin_after`` of
    the selected intervention with ``with_margin``; side effects need ``clean`` and
    ``baseline`` (none for interchange: clean inputs have no counterpart); ``directions``:
    only these of the kind's directions."""
    controls = dict(controls or {})
    methods = {"selected": main, **{f"control_{n}": c for n, c in controls.items()}}
    labels = [Behavior(b) for b in labels]
    groups = {}
    for d in directions_of(main.kind):
        if directions is not None and d not in directions:
            continue
        items = [ex for ex, lab in zip(examples, labels, strict=True) if lab == SOURCE[d]]
        if main.kind == "interchange":
            items = [ex for ex in items if all(ex in m.sources for m in methods.values())]
        groups[d] = items
    found: dict[str, dict[str, Transitions]] = {}
    rows = []
    for method, iv in methods.items():
        found[method] = {}
        for d, items in groups.items():
            outputs = outputs_with(subject, iv, alpha, d, positions, items, decoding,
                                   SOURCE[d].value.lower())
            after = [subject.task.classify(ex, out) for ex, out in zip(items, outputs,
                                                                        strict=True)]
            found[method][d] = _transitions(d, after)
            row_block = [{"method": method, "direction": d, "prompt": ex.prompt,
                          "before": SOURCE[d].value, "after": b.value, "output": out}
                         for ex, b, out in zip(items, after, outputs, strict=True)]
            if with_margin and method == "selected" and items:
                before = margins(subject, items, batch_size=decoding.batch_size)
                moved = margins(subject, items, iv, alpha, d, positions, decoding.batch_size)
                for row, m0, m1 in zip(row_block, before.tolist(), moved.tolist(),
                                       strict=True):
                    row["margin_before"], row["margin_after"] = m0, m1
            rows += row_block
    result = SteeringResult(alpha=float(alpha), k=len(main.selection),
                            selected=found.pop("selected"),
                            controls={m.removeprefix("control_"): t for m, t in found.items()},
                            items=pd.DataFrame(rows))
    if clean and baseline is not None and main.kind != "interchange":
        result.side = {d: _side(subject, clean, main, alpha, d, positions, decoding, baseline)
                       for d in groups}
    return result


def cell_score(result: SteeringResult) -> dict[str, float]:
    """The weaker direction's success, the strongest control, the worse clean drop, the score."""
    successes = [t.success for t in result.selected.values() if t.n]
    min_success = min(successes) if successes else math.nan
    controls = [t.success for by in result.controls.values() for t in by.values() if t.n]
    max_control = max(controls) if controls else 0.0
    drops = [s.clean_acc_drop for s in result.side.values()]
    drop = max(drops) if drops else 0.0
    out = {"min_success": min_success, "max_control_success": max_control,
           "clean_acc_drop": drop, "score": min_success - max_control - max(drop, 0.0)}
    # each direction's own numbers: +NMD and -NMD are two interventions, tuned apart
    for d, t in result.selected.items():
        own = [by[d].success for by in result.controls.values() if d in by and by[d].n]
        side = result.side.get(d)
        out |= {f"{d}_success": t.success if t.n else math.nan,
                f"{d}_max_control_success": max(own) if own else 0.0,
                f"{d}_clean_acc_drop": side.clean_acc_drop if side else 0.0}
    return out


@dataclass
class KindTuning:
    """Every scored cell (``stage`` screen or refine) and the pick."""

    scores: pd.DataFrame
    best: pd.Series

    @property
    def candidate(self) -> Candidate:
        return str(self.best["kind"]), str(self.best["positions"]), str(self.best["sites"])

    def best_of(self, candidate: Candidate, max_control, max_clean_drop,
                direction: str | None = None) -> pd.Series:
        """The candidate's best cell, for both directions or (``direction``) for one."""
        kind, positions, sites = candidate
        rows = self.scores[(self.scores["kind"] == kind) & (self.scores["positions"] == positions)
                           & (self.scores["sites"] == sites)]
        if direction is not None:
            rows = direction_view(rows, direction)
        return best_cell(rows, max_control, max_clean_drop)

    def best_by_direction(self, max_control, max_clean_drop) -> dict[str, pd.Series]:
        """Each direction's best pickable cell over every candidate: toward MEM and toward GEN
        are two interventions, and each may take its own kind, positions, sites, k and alpha."""
        out: dict[str, pd.Series] = {}
        for direction in DIRECTIONS:
            view = direction_view(_pickable(self.scores), direction)
            if not view.empty:
                out[direction] = best_cell(view, max_control, max_clean_drop)
        return out

    def budget_frontier(self, max_control: float | None,
                        max_clean_drop: float | None) -> dict[str, float]:
        """Which budget binds: per direction, the best selection-split success of the pickable
        cells within both budgets, without the clean-drop budget (``control_only``), without
        the control budget (``drop_only``) and without either (``unbounded``); NaN where no
        cell qualifies. Where ``within`` falls short of a target that ``control_only`` meets,
        the clean-accuracy cost, not the controls, is what stops the intervention."""
        budgets = {"within": (max_control, max_clean_drop), "control_only": (max_control, None),
                   "drop_only": (None, max_clean_drop), "unbounded": (None, None)}
        out: dict[str, float] = {}
        for direction in DIRECTIONS:
            view = direction_view(_pickable(self.scores), direction)
            if view.empty:
                continue
            for name, budget in budgets.items():
                best = view.loc[within_budget(view, *budget), "min_success"]
                out[f"steer/budget/{direction}/{name}"] = (float(best.max()) if len(best)
                                                           else math.nan)
        return out

    def metrics(self) -> dict[str, float]:
        return {"steer/tuned/top_fraction": float(self.best["top"]),
                "steer/tuned/alpha": float(self.best["alpha"]),
                "steer/tuned/k": float(self.best["k"]),
                "steer/tuned/score": float(self.best["score"]),
                "steer/tuned/n_cells": float(len(self.scores))}


def candidate_of(cell: pd.Series) -> Candidate:
    return str(cell["kind"]), str(cell["positions"]), str(cell["sites"])


def direction_view(scores: pd.DataFrame, direction: str) -> pd.DataFrame:
    """The cells as ``direction`` alone scored them: its success, strongest control and clean
    drop in the columns ``best_cell`` reads, and its own score; cells that did not steer that
    direction (ablate toward MEM) are left out."""
    own = {f"{direction}_success": "min_success",
           f"{direction}_max_control_success": "max_control_success",
           f"{direction}_clean_acc_drop": "clean_acc_drop"}
    if not set(own) <= set(scores.columns):
        return scores.iloc[0:0]
    view = scores.drop(columns=list(own.values())).rename(columns=own)
    view = view.dropna(subset=["min_success"])
    return view.assign(score=view["min_success"] - view["max_control_success"]
                       - view["clean_acc_drop"].clip(lower=0))


def _alphas(kind: str, alphas: Sequence[float]) -> list[float]:
    return [1.0] if kind in NO_ALPHA else [float(a) for a in alphas]


def tune_kinds(score_cell: Callable[[Candidate, float, float], dict[str, float]],
               candidates: Sequence[Candidate], tops: Sequence[float],
               alphas: Sequence[float], max_control: float | None,
               max_clean_drop: float | None, keep: int = 2,
               per_direction: bool = False) -> KindTuning:
    """Screen every candidate at the middle (top, alpha), refine the best ``keep`` over the whole
    grid (``per_direction``: the best ``keep`` of each direction); ``score_cell(candidate, top,
    alpha)`` returns ``cell_score``'s dict plus ``k``."""
    rows = []

    def score(cand: Candidate, top: float, alpha: float, stage: str) -> dict:
        row = {"kind": cand[0], "positions": cand[1], "sites": cand[2], "top": float(top),
               "alpha": float(alpha), "stage": stage, **score_cell(cand, top, alpha)}
        rows.append(row)
        return row

    tops = [float(t) for t in tops]
    if len(candidates) > 1:
        mid_top = tops[len(tops) // 2]
        for cand in candidates:
            cand_alphas = _alphas(cand[0], alphas)
            score(cand, mid_top, cand_alphas[len(cand_alphas) // 2], "screen")
        screened = _pickable(pd.DataFrame(rows))
        views = ([direction_view(screened, d) for d in DIRECTIONS] if per_direction
                 else [screened])
        # ranked by score (success - strongest control - clean drop), not by success within
        # the budget: whether one cell fits the budget says little about the candidate's best
        # cell (a strong site over budget at the middle alpha fits it at a smaller one, while
        # a site that moves nothing fits it everywhere)
        ranked: list[Candidate] = []
        for view in views:
            pool, taken = view.copy(), 0
            while taken < keep and not pool.empty:
                pick = best_cell(pool)
                ranked.append(candidate_of(pick))
                pool, taken = pool.drop(index=pick.name), taken + 1
        ranked = list(dict.fromkeys(ranked))
    else:
        ranked = list(candidates)
    done = {(r["kind"], r["positions"], r["sites"], r["top"], r["alpha"]) for r in rows}
    for cand in ranked:
        for top in tops:
            for alpha in _alphas(cand[0], alphas):
                if (*cand, top, alpha) not in done:
                    score(cand, top, alpha, "refine")
    scores = pd.DataFrame(rows)
    return KindTuning(scores, best_cell(_pickable(scores), max_control, max_clean_drop))


def _pickable(scores: pd.DataFrame) -> pd.DataFrame:
    """The cells the run may steer with: not ``interchange`` (an upper bound that needs each
    item's counterpart) nor ``ablate`` (toward GEN only), unless nothing else was scored."""
    mask = scores["kind"].isin(UNPICKABLE)
    return scores if mask.all() else scores[~mask]


def all_coordinates(model, sites: Sequence[str]) -> NeuronSelection:
    """Every coordinate of ``sites``: the selection of the ceiling's full-site interchange."""
    names, idx = [], []
    for site in sites:
        width = site_width(model, site)
        names += [site] * width
        idx.append(torch.arange(width))
    n = len(names)
    return NeuronSelection(sites=names, indices=torch.cat(idx), nmd=torch.zeros(n),
                           r=torch.zeros(n))


def gen_to_mem_ceiling(subject: Subject, examples: Sequence[Example],
                       labels: Sequence[Behavior], sources: Mapping[Example, Example],
                       sites: Sequence[str], decoding: Decoding = Decoding()
                       ) -> pd.DataFrame:
    """GEN items with a counterpart: does interchanging every coordinate of every analysed
    site (at every prompt position: the same relative positions, the last token when the
    lengths differ) produce the memorized answer at all? One row per item: prompt, after."""
    items = [ex for ex, lab in zip(examples, labels, strict=True)
             if Behavior(lab) == Behavior.GEN and ex in sources]
    if not items:
        return pd.DataFrame(columns=["prompt", "after", "reachable"])
    full = Intervention("interchange", all_coordinates(subject.model, sites),
                        sources=dict(sources))
    outputs = outputs_with(subject, full, 1.0, "to_mem", "prompt", items, decoding, "gen")
    after = [subject.task.classify(ex, out).value for ex, out in zip(items, outputs,
                                                                     strict=True)]
    return pd.DataFrame({"prompt": [ex.prompt for ex in items], "after": after,
                         "reachable": [a == Behavior.MEM.value for a in after]})


def kind_rows(candidate: Candidate, result: SteeringResult, cell: Mapping | None = None
              ) -> list[dict]:
    """kinds.csv rows of one evaluated candidate: one per direction."""
    kind, positions, sites = candidate
    items = result.items if result.items is not None else pd.DataFrame()
    out = []
    for d, t in result.selected.items():
        low, high = t.ci
        controls = {n: by[d].success for n, by in result.controls.items() if d in by}
        strongest = max(controls, key=lambda n: controls[n]) if controls else ""
        side = result.side.get(d)
        row = {"kind": kind, "positions": positions, "sites": sites, "direction": d,
               "top": float(cell["top"]) if cell is not None else math.nan,
               "k": result.cell(d)[0], "alpha": result.cell(d)[1], "n": t.n,
               "success": t.success,
               "ci_low": low, "ci_high": high, "other_rate": t.other / t.n if t.n else math.nan,
               "strongest_control": strongest,
               "max_control_success": controls.get(strongest, math.nan),
               "clean_acc_drop": side.clean_acc_drop if side else math.nan,
               "kl": side.kl if side else math.nan,
               "selection_score": float(cell["score"]) if cell is not None else math.nan}
        mine = items[(items.get("method") == "selected") & (items.get("direction") == d)] \
            if not items.empty else items
        if not mine.empty and "margin_before" in mine:
            sign = 1.0 if d == "to_mem" else -1.0
            moved = sign * (mine["margin_after"] - mine["margin_before"])
            row |= {"margin_before": float(mine["margin_before"].mean()),
                    "margin_after": float(mine["margin_after"].mean()),
                    "margin_shift": float(moved.mean()),
                    "wrong_way": float((moved < 0).mean())}
        out.append(row)
    return out


def kind_metrics(rows: Sequence[Mapping]) -> dict[str, float]:
    """``steer/kind/<kind>/<positions>/<dir>/<name>``: per-kind aggregates a replicate can
    average over seeds."""
    out = {}
    for row in rows:
        prefix = f"steer/kind/{row['kind']}/{row['positions']}/{row['direction']}"
        for name in ("success", "ci_low", "max_control_success", "clean_acc_drop", "kl",
                     "margin_shift", "wrong_way"):
            value = row.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                out[f"{prefix}/{name}"] = float(value)
    return out
