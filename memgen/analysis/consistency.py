"""Are the selected neurons the same across data samples of one task, and across tasks?

A raw overlap means little on its own: two top-5% selections from one model share about 5% of
their neurons by chance. Every overlap here therefore comes with its chance level under the
null that one set is a uniformly random subset of the universe of the same size: the
intersection is then hypergeometric (``scipy.stats.hypergeom``), which gives its expectation,
the expected Jaccard index (an exact sum over the distribution, not the ratio of expectations)
and the one-sided p-value P(X >= observed), in log space so that it stays finite for universes
of millions of neurons and sets of thousands (``log10_p_value`` keeps the evidence where
``p_value`` underflows to 0).

- ``intra_task_consistency``: split one task's pairs in two halves by conflict example, select
  top-k on each half and compare (overlap and the correlation of per-neuron r); optionally also
  compare pair sets from different perturbation seeds pairwise.
- ``inter_task_consistency``: compare the selections of several tasks on one model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from memgen.analysis.behavior import Pair, split_pairs
from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.stats import select_neurons

StatsFn = Callable[[Sequence[Pair]], dict[str, SiteStats]]


class PairSet(NamedTuple):
    """Pairs with their own statistics, e.g. labelled on another perturbation seed (its pair
    indices point into its own labelled groups, so the base ``stats_fn`` cannot serve it)."""

    pairs: Sequence[Pair]
    stats_fn: StatsFn

PAIR_SEP = "_vs_"  # MLflow metric names allow only [/\w.\- :], so not "~"
INTRA_PREFIX = "consistency/intra"
INTER_PREFIX = "consistency/inter"
INTER_FIELDS = ("jaccard", "expected_jaccard", "p_value")
_NAME = re.compile(r"^[\w.\-]+$")


# -- the hypergeometric null -----------------------------------------------------------------

def hypergeom_log_pmf(universe_size: int, size_a: int, size_b: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(support, natural-log pmf) of the intersection of a fixed a-set and a random b-set."""
    n, a, b = universe_size, size_a, size_b
    if not (0 <= a <= n and 0 <= b <= n):
        raise ValueError(f"hypergeometric: set sizes must lie in 0..{n}, got {a} and {b}")
    support = np.arange(max(0, a + b - n), min(a, b) + 1)
    return support, hypergeom(n, a, b).logpmf(support)


def hypergeom_log_sf(observed: int, universe_size: int, size_a: int, size_b: int) -> float:
    """Natural log of P(X >= observed) for X the intersection of random sets of these sizes."""
    support, _ = hypergeom_log_pmf(universe_size, size_a, size_b)
    if observed <= support[0]:
        return 0.0
    if observed > support[-1]:
        return -math.inf
    return min(0.0, float(hypergeom(universe_size, size_a, size_b).logsf(observed - 1)))


def expected_jaccard(universe_size: int, size_a: int, size_b: int) -> float:
    """E[X / (a + b - X)] over the hypergeometric X: the Jaccard index of chance."""
    if size_a + size_b == 0:
        return math.nan
    support, log_pmf = hypergeom_log_pmf(universe_size, size_a, size_b)
    return float((np.exp(log_pmf) * support / (size_a + size_b - support)).sum())


# -- overlap of two sets ----------------------------------------------------------------------

@dataclass(frozen=True)
class OverlapStats:
    """Overlap of two sets drawn from one universe, against random sets of the same sizes."""

    size_a: int
    size_b: int
    universe_size: int
    intersection: int
    jaccard: float
    overlap_coef: float  # |A & B| / min(|A|, |B|)
    expected_intersection: float  # |A| |B| / N
    expected_jaccard: float
    p_value: float  # P(X >= intersection), X hypergeometric
    log10_p_value: float  # finite where p_value underflows to 0
    enrichment: float  # intersection / expected_intersection

    def to_metrics(self, prefix: str, names: Sequence[str] | None = None) -> dict[str, float]:
        """``{prefix/name: value}`` for ``names`` (default: every field)."""
        names = [f.name for f in fields(self)] if names is None else names
        return {f"{prefix}/{name}": float(getattr(self, name)) for name in names}


def overlap_stats(set_a: Iterable[Hashable], set_b: Iterable[Hashable],
                  universe_size: int) -> OverlapStats:
    """Jaccard, overlap coefficient and their chance level for two non-empty sets."""
    a, b = set(set_a), set(set_b)
    if not a or not b:
        raise ValueError(f"overlap_stats: both sets must be non-empty (got {len(a)} and {len(b)})")
    if len(a | b) > universe_size:
        raise ValueError(f"overlap_stats: universe_size {universe_size} is smaller than the "
                         f"union of the sets ({len(a | b)} elements)")
    inter = len(a & b)
    expected = len(a) * len(b) / universe_size
    log_p = hypergeom_log_sf(inter, universe_size, len(a), len(b))
    return OverlapStats(
        size_a=len(a), size_b=len(b), universe_size=universe_size, intersection=inter,
        jaccard=inter / len(a | b), overlap_coef=inter / min(len(a), len(b)),
        expected_intersection=expected,
        expected_jaccard=expected_jaccard(universe_size, len(a), len(b)),
        p_value=math.exp(log_p), log10_p_value=log_p / math.log(10),
        enrichment=inter / expected)


# -- intra-task: halves of one task's pairs ---------------------------------------------------

def split_halves(pairs: Sequence[Pair], seed: int) -> tuple[list[Pair], list[Pair]]:
    """Two halves of ``pairs`` with no conflict example in both; deterministic from ``seed``.

    Splitting by example (not by pair) keeps variants of one example from making the halves
    look more alike than independent samples of the task would.
    """
    n_groups = len({p.group for p in pairs})
    if n_groups < 4:
        raise ValueError(f"too few pairs to split for consistency: {n_groups} groups, need >= 4")
    return split_pairs(pairs, 0.5, seed)


def site_widths(stats: Mapping[str, SiteStats], sites: Sequence[str] | None = None
                ) -> dict[str, int]:
    """site -> number of neurons: the universe that a selection is drawn from."""
    names = list(stats) if sites is None else list(dict.fromkeys(sites))
    missing = [s for s in names if s not in stats]
    if missing:
        raise ValueError(f"sites {missing}: no statistics (have {sorted(stats)})")
    return {s: stats[s].width for s in sorted(names)}


def r_correlation(stats_a: Mapping[str, SiteStats], stats_b: Mapping[str, SiteStats]) -> float:
    """Pearson correlation of per-neuron r over all neurons of the sites both share.

    Overlap of top-k sets is brittle near the cut-off; this uses every neuron. NaN if either
    side's r is constant.
    """
    common = sorted(set(stats_a) & set(stats_b))
    if not common:
        raise ValueError(f"r_correlation: no common site ({sorted(stats_a)} vs {sorted(stats_b)})")
    for s in common:
        if stats_a[s].width != stats_b[s].width:
            raise ValueError(f"site '{s}': widths differ ({stats_a[s].width} vs "
                             f"{stats_b[s].width}); the statistics come from different models")
    ra, rb = (np.nan_to_num(np.concatenate([st[s].r.detach().double().cpu().numpy()
                                            for s in common])) for st in (stats_a, stats_b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else math.nan


@dataclass
class Comparison:
    """Selections from two pair sets of one task: their overlap and the correlation of r."""

    name_a: str
    name_b: str
    n_pairs_a: int
    n_pairs_b: int
    overlap: OverlapStats
    r_corr: float

    def row(self) -> dict:
        return {"a": self.name_a, "b": self.name_b, "n_pairs_a": self.n_pairs_a,
                "n_pairs_b": self.n_pairs_b, **vars(self.overlap), "r_corr": self.r_corr}


@dataclass
class IntraResult:
    """Halves of one task's pairs compared, plus optional pairwise comparisons of pair sets."""

    overlap: OverlapStats
    r_corr: float
    halves: tuple[list[Pair], list[Pair]]
    selections: tuple[NeuronSelection, NeuronSelection]
    universe_size: int
    comparisons: dict[str, Comparison]  # "<a>_vs_<b>" -> comparison of named pair sets

    def to_metrics(self, prefix: str = INTRA_PREFIX) -> dict[str, float]:
        """``consistency/intra/{jaccard,...,r_corr}`` and per pair of sets ``<a>_vs_<b>/...``."""
        names = ("jaccard", "expected_jaccard", "overlap_coef", "p_value", "enrichment")
        out = self.overlap.to_metrics(prefix, names)
        out[f"{prefix}/r_corr"] = self.r_corr
        for key, c in self.comparisons.items():
            out.update(c.overlap.to_metrics(f"{prefix}/{key}", INTER_FIELDS))
            out[f"{prefix}/{key}/r_corr"] = c.r_corr
        return out

    def table(self) -> pd.DataFrame:
        """One row per comparison (the halves first), every overlap field and r_corr."""
        halves = Comparison("half_a", "half_b", len(self.halves[0]), len(self.halves[1]),
                            self.overlap, self.r_corr)
        return pd.DataFrame([halves.row(), *(c.row() for c in self.comparisons.values())])


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} '{name}': use letters, digits, '_', '.' or '-' (it becomes "
                         f"part of a metric name)")
    return name


def _compare(name_a: str, pairs_a: Sequence[Pair], stats_a: Mapping[str, SiteStats],
             name_b: str, pairs_b: Sequence[Pair], stats_b: Mapping[str, SiteStats],
             select: Callable[[Mapping[str, SiteStats]], NeuronSelection],
             sites: Sequence[str] | None) -> tuple[Comparison, NeuronSelection, NeuronSelection]:
    universe_a, universe_b = site_widths(stats_a, sites), site_widths(stats_b, sites)
    if universe_a != universe_b:
        raise ValueError(f"pair sets '{name_a}' and '{name_b}': statistics cover different "
                         f"sites or widths ({universe_a} vs {universe_b})")
    sel_a, sel_b = select(stats_a), select(stats_b)
    n = sum(universe_a.values())
    overlap = overlap_stats(sel_a.keys(), sel_b.keys(), n)
    pool_a = {s: stats_a[s] for s in universe_a}
    pool_b = {s: stats_b[s] for s in universe_b}
    comparison = Comparison(name_a, name_b, len(pairs_a), len(pairs_b), overlap,
                            r_correlation(pool_a, pool_b))
    return comparison, sel_a, sel_b


def intra_task_consistency(stats_fn: StatsFn, pairs: Sequence[Pair], top_k: int | None = None,
                           top_fraction: float | None = None, seed: int = 0,
                           extra_pair_sets: Mapping[str, Sequence[Pair] | PairSet] | None = None,
                           sites: Sequence[str] | None = None) -> IntraResult:
    """Select top-k (or a top fraction) on two halves of ``pairs`` and compare the selections.

    ``stats_fn(pairs) -> {site: SiteStats}`` computes the statistics of a pair set (the caller
    owns the model and the activations). With ``extra_pair_sets`` (e.g. pairs from other
    perturbation seeds, as ``PairSet``s with their own ``stats_fn``), ``pairs`` joins them as
    ``"base"`` and every two sets are compared.
    """
    def select(stats: Mapping[str, SiteStats]) -> NeuronSelection:
        return select_neurons(dict(stats), top_k=top_k, top_fraction=top_fraction, sites=sites)

    half_a, half_b = split_halves(pairs, seed)
    halves, sel_a, sel_b = _compare("half_a", half_a, stats_fn(half_a),
                                    "half_b", half_b, stats_fn(half_b), select, sites)
    comparisons: dict[str, Comparison] = {}
    if extra_pair_sets:
        if "base" in extra_pair_sets:
            raise ValueError("extra_pair_sets: the name 'base' is taken by `pairs`")
        sets = {"base": PairSet(pairs, stats_fn)}
        for name, extra in extra_pair_sets.items():
            sets[_check_name(name, "pair set")] = (
                extra if isinstance(extra, PairSet) else PairSet(extra, stats_fn))
        stats = {name: s.stats_fn(s.pairs) for name, s in sets.items()}
        for a, b in combinations(sets, 2):
            comparisons[f"{a}{PAIR_SEP}{b}"] = _compare(a, sets[a].pairs, stats[a], b,
                                                        sets[b].pairs, stats[b], select,
                                                        sites)[0]
    return IntraResult(overlap=halves.overlap, r_corr=halves.r_corr, halves=(half_a, half_b),
                       selections=(sel_a, sel_b), universe_size=halves.overlap.universe_size,
                       comparisons=comparisons)


# -- inter-task: one model, several tasks -----------------------------------------------------

def _shared_universe(selections: Mapping[str, NeuronSelection],
                     universes: Mapping[str, Mapping[str, int]]) -> int:
    """The common universe size; fails if the tasks' models differ or a neuron lies outside."""
    missing = [t for t in selections if t not in universes]
    if missing:
        raise ValueError(f"universes: no site widths for tasks {missing}")
    first = next(iter(selections))
    ref = dict(universes[first])
    for task in selections:
        widths = dict(universes[task])
        if widths != ref:
            diff = sorted(s for s in set(ref) | set(widths) if ref.get(s) != widths.get(s))
            shown = ", ".join(f"{s}: {ref.get(s)} vs {widths.get(s)}" for s in diff[:5])
            raise ValueError(f"tasks do not share a model: '{first}' and '{task}' differ in "
                             f"site widths ({shown})")
        outside = [(s, i) for s, i in selections[task].keys() if not 0 <= i < widths.get(s, 0)]
        if outside:
            raise ValueError(f"task '{task}': selected neurons {outside[:3]} lie outside its "
                             f"model's sites {widths}")
    return sum(ref.values())


def overlap_matrix(tasks: Sequence[str], overlaps: Mapping[tuple[str, str], OverlapStats],
                   field: str = "jaccard", diagonal: float = 1.0) -> pd.DataFrame:
    """A symmetric task-by-task table of one OverlapStats field."""
    matrix = pd.DataFrame(np.full((len(tasks), len(tasks)), diagonal), index=list(tasks),
                          columns=list(tasks), dtype=float)
    for (a, b), stats in overlaps.items():
        matrix.loc[a, b] = matrix.loc[b, a] = float(getattr(stats, field))
    return matrix


def inter_task_consistency(selections: Mapping[str, NeuronSelection],
                           universe_size: int | None = None, *,
                           universes: Mapping[str, Mapping[str, int]] | None = None
                           ) -> tuple[pd.DataFrame, dict[tuple[str, str], OverlapStats]]:
    """Jaccard matrix of the tasks' selections and the OverlapStats of every pair of tasks.

    Give ``universe_size`` (the tasks share one model) or, better, ``universes``: per task
    ``site_widths(stats)``, which is checked to be the same for every task.
    """
    if len(selections) < 2:
        raise ValueError(f"inter_task_consistency: need >= 2 tasks, got {len(selections)}")
    for task in selections:
        _check_name(task, "task")
    if universes is not None:
        n = _shared_universe(selections, universes)
        if universe_size is not None and universe_size != n:
            raise ValueError(f"universe_size {universe_size} differs from the {n} neurons of "
                             f"the tasks' sites")
    elif universe_size is None:
        raise ValueError("inter_task_consistency: give universe_size or universes")
    else:
        n = universe_size
    keys = {task: set(sel.keys()) for task, sel in selections.items()}
    overlaps = {(a, b): overlap_stats(keys[a], keys[b], n) for a, b in combinations(keys, 2)}
    return overlap_matrix(list(keys), overlaps), overlaps


def inter_metrics(overlaps: Mapping[tuple[str, str], OverlapStats],
                  prefix: str = INTER_PREFIX) -> dict[str, float]:
    """``consistency/inter/<a>_vs_<b>/{jaccard,expected_jaccard,p_value}``."""
    out: dict[str, float] = {}
    for (a, b), stats in overlaps.items():
        out.update(stats.to_metrics(f"{prefix}/{a}{PAIR_SEP}{b}", INTER_FIELDS))
    return out
