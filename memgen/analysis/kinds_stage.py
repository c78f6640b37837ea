"""Stage 4b: intervention kinds side by side (issue 26), on top of the steering stage.

``run_kinds`` either (one legacy candidate: add at last_prompt / every_pass) adds the margin,
the share pushed the wrong way and the GEN->MEM ceiling to the steering result the legacy path
produced, or tunes kind x positions x sites x k x alpha on the selection split
(``steering.compare.tune_kinds``: pruned) and steers the evaluation split once per candidate at
its own pick. The overall pick is the steering result of the run.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
import torch

from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.results import Behaviors, Features, Neurons, Split
from memgen.analysis.settings import AnalysisSettings, Subject
from memgen.analysis.sites import resolve_sites
from memgen.analysis.stats import select_neurons
from memgen.analysis.steering import kinds as kinds_mod
from memgen.analysis.steering.compare import (
    Candidate,
    KindTuning,
    candidate_of,
    cell_score,
    evaluate_intervention,
    gen_to_mem_ceiling,
    kind_metrics,
    kind_rows,
    tune_kinds,
)
from memgen.analysis.steering.evaluation import CleanBaseline, SteeringResult, merge_directions
from memgen.analysis.steering.intervene import directions_of, positions_of
from memgen.analysis.steering.margin import margins
from memgen.analysis.steering.tuning import direction_metrics
from memgen.tasks.base import Behavior, Example

LEGACY_POSITIONS = ("last_prompt", "every_pass")


@dataclass
class KindsReport:
    """kinds.csv rows, the tuning (None on the legacy path), the ceiling, the pick's result."""

    table: pd.DataFrame
    tuning: KindTuning | None = None
    ceiling: pd.DataFrame | None = None
    result: SteeringResult | None = None
    pick: Candidate | None = None  # the joint pick (both directions at one cell)
    # direction -> its own pick (analysis.steering.tune_per_direction): what ``result`` steered
    picks: dict[str, Candidate] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def steers(self, candidate: Candidate, direction: str) -> bool:
        """Is ``candidate`` what the run's result steered ``direction`` with?"""
        return (self.picks.get(direction) == candidate if self.picks
                else candidate == self.pick)

    def picked(self) -> str:
        """The steered candidates, for a report line."""
        if self.picks:
            return "; ".join(f"{dr}: {' / '.join(c)}" for dr, c in self.picks.items())
        return " / ".join(self.pick) if self.pick else ""


def candidates(settings: AnalysisSettings) -> list[Candidate]:
    s = settings.steering
    kinds = s.tune_kinds or (s.kind,)
    positions = s.tune_positions or (positions_of(s.positions, s.last_prompt_only),)
    sites = s.tune_sites or (s.sites,)
    return list(itertools.product(kinds, positions, sites))


def is_legacy(settings: AnalysisSettings) -> bool:
    """One candidate that today's steering path (hooks.steer) runs: add at last_prompt or
    every_pass."""
    cands = candidates(settings)
    return len(cands) == 1 and cands[0][0] == "add" and cands[0][1] in LEGACY_POSITIONS


def _sigma(features: Features, split: Split) -> dict[str, torch.Tensor]:
    x, _ = features.take(split.items)
    return {site: v.float().std(0) for site, v in x.items()}


def _sources(behaviors: Behaviors, split: Split, seed: int
             ) -> tuple[dict[Example, Example], dict[Example, Example]]:
    lab = behaviors.labelled
    return (kinds_mod.counterparts(lab.groups, lab.labels, split.items),
            kinds_mod.random_sources(lab.groups, lab.labels, split.items, seed))


def _add_margins(subject: Subject, settings: AnalysisSettings, result: SteeringResult,
                 selection: NeuronSelection | Mapping[str, NeuronSelection], split: Split,
                 positions: str) -> None:
    """The margins of the legacy result's selected items, with the same add hooks (each
    direction's own selection and alpha where they were tuned per direction)."""
    by_prompt = {ex.prompt: ex for ex in split.examples}
    items = result.items
    if items is None:  # a result without per-item rows has nothing to add margins to
        return
    items["margin_before"] = math.nan
    items["margin_after"] = math.nan
    for d in result.selected:
        rows = items.index[(items["method"] == "selected") & (items["direction"] == d)]
        examples = [by_prompt[p] for p in items.loc[rows, "prompt"]]
        if not examples:
            continue
        bs = settings.decoding.batch_size
        items.loc[rows, "margin_before"] = margins(subject, examples, batch_size=bs).numpy()
        chosen = selection[d] if isinstance(selection, Mapping) else selection
        main = kinds_mod.build("add", chosen, {})
        items.loc[rows, "margin_after"] = margins(subject, examples, main, result.cell(d)[1], d,
                                                  positions, bs).numpy()


def ceiling_metrics(ceiling: pd.DataFrame, result: SteeringResult | None) -> dict[str, float]:
    out = {"steer/ceiling/to_mem/n": float(len(ceiling))}
    if len(ceiling):
        out["steer/ceiling/to_mem/reachable"] = float(ceiling["reachable"].mean())
    if result is not None and result.items is not None and len(ceiling):
        reach = set(ceiling.loc[ceiling["reachable"], "prompt"])
        rows = result.items[(result.items["method"] == "selected")
                            & (result.items["direction"] == "to_mem")]
        within = rows[rows["prompt"].isin(reach)]
        if len(within):
            out["steer/to_mem/success_given_reachable"] = float(
                (within["after"] == Behavior.MEM.value).mean())
    return out


def kind_label(cand: Candidate, multi_sites: bool) -> Candidate:
    """The kinds table's name of a candidate: ``kind:sites`` when sites vary, kept safe for a
    metric name part (MLflow refuses ``@`` and ``,``; sites may read ``resid.3,mlp.4``)."""
    kind, positions, sites = cand
    return (re.sub(r"[^\w\-.:]", "_", f"{kind}:{sites}") if multi_sites else kind, positions,
            sites)


def run_kinds(subject: Subject, settings: AnalysisSettings, neurons: Neurons,
              features: Features, behaviors: Behaviors, clean: list[Example],
              baseline: CleanBaseline | None, pool_of: Callable[[str], dict[str, SiteStats]],
              legacy: SteeringResult | None = None,
              legacy_selection: NeuronSelection | Mapping[str, NeuronSelection] | None = None
              ) -> KindsReport:
    """See the module docstring; ``pool_of(sites)`` gives the steerable sites' statistics."""
    s, d = settings.steering, settings.steering_decoding
    sel_split, ev_split = behaviors.selection, behaviors.evaluation
    sigma = _sigma(features, sel_split)
    cands = candidates(settings)
    report = KindsReport(table=pd.DataFrame())
    multi_sites = len({c[2] for c in cands}) > 1

    def label(c: Candidate) -> Candidate:
        return kind_label(c, multi_sites)

    if legacy is not None and legacy_selection is not None:
        cand = cands[0]
        _add_margins(subject, settings, legacy, legacy_selection, ev_split, cand[1])
        report.result, report.pick = legacy, cand
        rows = kind_rows(cand, legacy)
    else:
        def make(cand: Candidate, top: float, split: Split):
            kind, _positions, sites = cand
            pool = pool_of(sites)
            sel = select_neurons(pool, top_fraction=float(top))
            real, rand = _sources(behaviors, split, settings.seed)
            main = kinds_mod.build(kind, sel, pool, sigma, real)
            ctrl = kinds_mod.controls(kind, main, pool, sigma, settings.seed, rand, s.controls)
            return main, ctrl

        def score(cand: Candidate, top: float, alpha: float) -> dict[str, float]:
            main, ctrl = make(cand, top, sel_split)
            res = evaluate_intervention(subject, sel_split.examples, sel_split.behaviors, main,
                                        alpha, cand[1], ctrl, decoding=d, clean=clean,
                                        baseline=baseline)
            return {"k": len(main.selection), **cell_score(res)}

        budget = (s.tune_max_control, s.tune_max_clean_drop)
        report.tuning = tune_kinds(score, cands, s.tune_top_fraction, s.tune_alpha, *budget,
                                   s.tune_keep, per_direction=s.tune_per_direction)
        report.pick = report.tuning.candidate
        cells = report.tuning.best_by_direction(*budget) if s.tune_per_direction else {}
        report.picks = {dr: candidate_of(cell) for dr, cell in cells.items()}
        rows, held_out = [], {}
        for cand in dict.fromkeys(cands):
            # per direction: each direction at the candidate's own best cell for it
            for dirs in ([(dr,) for dr in directions_of(cand[0])] if report.picks else [None]):
                try:
                    cell = report.tuning.best_of(cand, *budget,
                                                 direction=dirs[0] if dirs else None)
                except ValueError:  # no tuning item in this direction (interchange)
                    if dirs is None:
                        raise
                    continue
                main, ctrl = make(cand, float(cell["top"]), ev_split)
                res = evaluate_intervention(subject, ev_split.examples, ev_split.behaviors,
                                            main, float(cell["alpha"]), cand[1], ctrl,
                                            decoding=d, clean=clean, baseline=baseline,
                                            with_margin=True, directions=dirs)
                for dr in res.selected:
                    held_out[cand, dr] = res
                if dirs is None and cand == report.pick:
                    report.result = res
                rows += [row | {"steered": report.steers(cand, row["direction"])}
                         for row in kind_rows(label(cand), res, cell)]
        if report.picks:
            report.result = merge_directions({dr: held_out[cand, dr]
                                              for dr, cand in report.picks.items()})
            report.metrics |= direction_metrics(cells)
        report.metrics |= report.tuning.metrics() | report.tuning.budget_frontier(*budget)
    report.table = pd.DataFrame(rows)
    report.metrics |= kind_metrics(rows)
    if s.ceiling:
        real, _ = _sources(behaviors, ev_split, settings.seed)
        analysed = resolve_sites(subject.model, list(settings.sites))
        report.ceiling = gen_to_mem_ceiling(subject, ev_split.examples, ev_split.behaviors,
                                            real, analysed, d)
        report.metrics |= ceiling_metrics(report.ceiling, report.result)
    return report


def steer_kind(subject: Subject, settings: AnalysisSettings, stats: dict[str, SiteStats],
               selection: NeuronSelection, split: Split, clean: list[Example],
               baseline: CleanBaseline | None) -> SteeringResult:
    """``steering.kind`` at ``steering.positions`` and ``alpha`` on ``split`` with its controls
    (add, set_mean, ablate: what the statistics alone define); ``stats``: the steerable sites'
    statistics (the controls' pool)."""
    s = settings.steering
    if s.kind in ("add_scaled", "interchange"):
        raise ValueError(f"analysis.steering.kind: '{s.kind}' needs the activations and pairs "
                         f"of a full analysis (analyse_model), not a steering-only run")
    main = kinds_mod.build(s.kind, selection, stats)
    ctrl = kinds_mod.controls(s.kind, main, stats, seed=settings.seed, names=s.controls)
    return evaluate_intervention(subject, split.examples, split.behaviors, main, s.alpha,
                                 positions_of(s.positions, s.last_prompt_only), ctrl,
                                 decoding=settings.steering_decoding, clean=clean,
                                 baseline=baseline)
