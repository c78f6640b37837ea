"""Overlap statistics find planted shared neurons, sit at chance for random sets, and are exact."""

from __future__ import annotations

import io
import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from memgen.analysis.behavior import Pair
from memgen.analysis.consistency import (
    PairSet,
    expected_jaccard,
    hypergeom_log_pmf,
    hypergeom_log_sf,
    inter_metrics,
    inter_task_consistency,
    intra_task_consistency,
    overlap_matrix,
    overlap_stats,
    r_correlation,
    site_widths,
    split_halves,
)
from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.stats import stream_stats
from memgen.reporting.plots.consistency import overlap_matrix_figure

MLFLOW_NAME = re.compile(r"^[/\w.\- :]*$")  # what MLflow accepts as a metric name


def _exact_sf(k: int, n: int, a: int, b: int) -> Fraction:
    """P(X >= k) by direct summation of binomial coefficients, in exact arithmetic."""
    top = sum(math.comb(a, i) * math.comb(n - a, b - i) for i in range(k, min(a, b) + 1))
    return Fraction(top, math.comb(n, b))


def _exact_expected_jaccard(n: int, a: int, b: int) -> Fraction:
    total = math.comb(n, b)
    return sum((Fraction(math.comb(a, i) * math.comb(n - a, b - i), total) * Fraction(i, a + b - i)
                for i in range(0, min(a, b) + 1)), Fraction(0))


def _random_sets(rng: np.random.Generator, n: int, a: int, b: int) -> tuple[set, set]:
    return tuple(set(rng.choice(n, size, replace=False).tolist()) for size in (a, b))


# -- the hypergeometric null --------------------------------------------------------------------

@pytest.mark.parametrize(("n", "a", "b"), [(20, 7, 9), (12, 12, 5), (15, 10, 9), (30, 1, 29),
                                           (9, 0, 4)])
def test_pvalue_and_expected_jaccard_equal_exact_sums(n, a, b):
    support, log_pmf = hypergeom_log_pmf(n, a, b)
    assert math.isclose(float(np.exp(log_pmf).sum()), 1.0, rel_tol=1e-12)
    for k in range(0, min(a, b) + 2):
        exact = float(_exact_sf(k, n, a, b))
        assert math.isclose(math.exp(hypergeom_log_sf(k, n, a, b)), exact, rel_tol=1e-10), k
    if a + b:
        exact_j = float(_exact_expected_jaccard(n, a, b))
        assert math.isclose(expected_jaccard(n, a, b), exact_j, rel_tol=1e-10, abs_tol=1e-15)


def test_pvalue_is_exact_and_stable_at_model_scale():
    n, a, b = 100_000, 800, 600  # expected intersection 4.8
    for k in (0, 5, 12, 40, 600):
        exact = _exact_sf(k, n, a, b)
        log_exact = math.log(exact.numerator) - math.log(exact.denominator)
        assert math.isclose(hypergeom_log_sf(k, n, a, b), log_exact, rel_tol=1e-9, abs_tol=1e-9)
    # a Llama-3B-sized universe, top 5% on both sides: finite, in range, no warnings
    n, a = 29 * 3072, round(0.05 * 29 * 3072)
    assert 0.3 < math.exp(hypergeom_log_sf(round(a * a / n), n, a, a)) < 0.7
    assert math.isclose(expected_jaccard(n, a, a), 0.05 / 1.95, rel_tol=0.02)
    huge = overlap_stats(range(5000), range(5000), 1_000_000)
    assert huge.p_value == 0.0 and -20000 < huge.log10_p_value < -10000


def test_expected_jaccard_matches_monte_carlo():
    n, a, b, draws = 200, 30, 50, 20_000
    rng = np.random.default_rng(0)
    picks = np.argsort(rng.random((draws, n)), axis=1)[:, :b]  # b random elements per draw
    inter = (picks < a).sum(1)  # A = {0, ..., a-1}
    jac = inter / (a + b - inter)
    assert abs(jac.mean() - expected_jaccard(n, a, b)) < 4 * jac.std() / math.sqrt(draws)
    naive = (a * b / n) / (a + b - a * b / n)  # ratio of expectations: not the same thing
    assert abs(naive - expected_jaccard(n, a, b)) > 4 * jac.std() / math.sqrt(draws)


# -- overlap of two sets ------------------------------------------------------------------------

def test_planted_shared_neurons_are_detected():
    rng = np.random.default_rng(1)
    shared = set(range(30))
    a = shared | set(rng.choice(np.arange(100, 2500), 20, replace=False).tolist())
    b = shared | set(rng.choice(np.arange(2500, 5000), 20, replace=False).tolist())
    stats = overlap_stats(a, b, 5000)
    assert (stats.size_a, stats.size_b, stats.intersection) == (50, 50, 30)
    assert stats.jaccard == pytest.approx(30 / 70) and stats.overlap_coef == pytest.approx(0.6)
    assert stats.expected_intersection == pytest.approx(0.5)
    assert stats.enrichment == pytest.approx(60.0)
    assert stats.p_value < 1e-10 and stats.log10_p_value < -10
    assert stats.expected_jaccard < 0.01
    metrics = stats.to_metrics("consistency/intra", ["jaccard", "p_value"])
    assert metrics == {"consistency/intra/jaccard": stats.jaccard,
                       "consistency/intra/p_value": stats.p_value}


def test_random_sets_sit_at_chance():
    n, a, b, seeds = 2000, 100, 150, 300
    rng = np.random.default_rng(2)
    results = [overlap_stats(*_random_sets(rng, n, a, b), n) for _ in range(seeds)]
    jac = np.array([r.jaccard for r in results])
    p = np.array([r.p_value for r in results])
    assert abs(jac.mean() - results[0].expected_jaccard) < 4 * jac.std() / math.sqrt(seeds)
    assert np.median(p) > 0.1
    assert (p < 0.05).mean() < 0.1
    assert abs(np.mean([r.enrichment for r in results]) - 1) < 0.1


def test_overlap_validation():
    with pytest.raises(ValueError, match="non-empty"):
        overlap_stats(set(), {1}, 10)
    with pytest.raises(ValueError, match="universe_size"):
        overlap_stats(range(8), range(4, 12), 10)


# -- intra-task ---------------------------------------------------------------------------------

def _pairs(n_groups: int, per_group: int = 3) -> list[Pair]:
    return [Pair(g, 0, j) for g in range(n_groups) for j in range(1, per_group + 1)]


def test_split_halves_disjoint_by_group_and_deterministic():
    pairs = _pairs(11)
    a, b = split_halves(pairs, seed=3)
    groups_a, groups_b = {p.group for p in a}, {p.group for p in b}
    assert not groups_a & groups_b and groups_a | groups_b == set(range(11))
    assert abs(len(groups_a) - len(groups_b)) <= 1 and sorted(a + b) == sorted(pairs)
    assert split_halves(pairs, seed=3) == (a, b)
    assert any(split_halves(pairs, seed=s) != (a, b) for s in range(4, 10))
    with pytest.raises(ValueError, match="too few pairs to split for consistency: 3 groups"):
        split_halves(_pairs(3), seed=0)


def _stats(seed: int, widths=(("resid.1", 30), ("resid.2", 30))) -> dict[str, SiteStats]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(64) % 2
    return stream_stats([({s: torch.randn(64, w, generator=gen) for s, w in widths}, y)])


def test_r_correlation():
    stats = _stats(0)
    assert r_correlation(stats, stats) == pytest.approx(1.0)
    flipped = {s: SiteStats(st.site, st.n_mem, st.n_gen, st.mean_mem, st.mean_gen, -st.nmd, -st.r)
               for s, st in stats.items()}
    assert r_correlation(stats, flipped) == pytest.approx(-1.0)
    assert abs(r_correlation(stats, _stats(1))) < 0.4
    with pytest.raises(ValueError, match="widths differ"):
        r_correlation(stats, _stats(0, (("resid.1", 31),)))
    with pytest.raises(ValueError, match="no common site"):
        r_correlation(stats, _stats(0, (("mlp.1", 30),)))


def _planted_stats_fn(signal: float):
    """stats_fn over pairs: resid.2[0..5] carry the label with strength ``signal``."""
    def stats_fn(pairs):
        xs, ys = [], []
        for p in pairs:
            for k, label in ((p.i, 1), (p.j, 0)):
                gen = torch.Generator().manual_seed(1000 * p.group + k)
                x = torch.randn(2, 40, generator=gen)
                x[1, :6] += signal * label
                xs.append(x)
                ys.append(label)
        x = torch.stack(xs)
        return stream_stats([({"resid.1": x[:, 0], "resid.2": x[:, 1]}, torch.tensor(ys))])
    return stats_fn


def test_intra_task_consistency_finds_stable_neurons():
    pairs = _pairs(40, 2)
    extra = {"seed1": _pairs(40, 2)[::2], "seed2": _pairs(40, 2)[1::2]}
    result = intra_task_consistency(_planted_stats_fn(2.0), pairs, top_k=6, seed=0,
                                    extra_pair_sets=extra)
    assert result.universe_size == 80 and len(result.selections[0]) == 6
    assert result.overlap.intersection == 6 and result.overlap.p_value < 1e-6
    assert result.r_corr > 0.3
    assert set(result.comparisons) == {"base_vs_seed1", "base_vs_seed2", "seed1_vs_seed2"}
    metrics = result.to_metrics()
    for name in ("jaccard", "expected_jaccard", "overlap_coef", "p_value", "enrichment", "r_corr"):
        assert f"consistency/intra/{name}" in metrics
    assert "consistency/intra/seed1_vs_seed2/jaccard" in metrics
    assert all(MLFLOW_NAME.match(k) for k in metrics)
    assert len(result.table()) == 4

    noise = intra_task_consistency(_planted_stats_fn(0.0), pairs, top_fraction=0.1, seed=0)
    assert len(noise.selections[0]) == 8 and noise.overlap.p_value > 1e-3
    assert abs(noise.r_corr) < 0.4
    again = intra_task_consistency(_planted_stats_fn(0.0), pairs, top_fraction=0.1, seed=0)
    assert again.to_metrics() == noise.to_metrics()
    with pytest.raises(ValueError, match="'base' is taken"):
        intra_task_consistency(_planted_stats_fn(1.0), pairs, top_k=3,
                               extra_pair_sets={"base": pairs})


def test_a_pair_set_from_another_seed_uses_its_own_statistics():
    """Pairs of another perturbation seed index their own labelled groups: their PairSet's
    stats_fn is used, not the base one (a planted signal there, noise in the base)."""
    pairs = _pairs(40, 2)
    shared = intra_task_consistency(_planted_stats_fn(2.0), pairs, top_k=6, seed=0,
                                    extra_pair_sets={"other": PairSet(pairs,
                                                                      _planted_stats_fn(2.0))})
    assert shared.comparisons["base_vs_other"].overlap.intersection == 6
    unrelated = intra_task_consistency(_planted_stats_fn(2.0), pairs, top_k=6, seed=0,
                                       extra_pair_sets={"other": PairSet(pairs,
                                                                         _planted_stats_fn(0.0))})
    other = unrelated.comparisons["base_vs_other"]
    assert other.overlap.intersection < 6 and other.overlap.p_value > 1e-3


# -- inter-task ---------------------------------------------------------------------------------

def _selection(keys: list[tuple[str, int]]) -> NeuronSelection:
    n = len(keys)
    return NeuronSelection(sites=[s for s, _ in keys], indices=torch.tensor([i for _, i in keys]),
                           nmd=torch.ones(n), r=torch.ones(n))


def test_inter_task_matrix_metrics_and_universe_checks():
    shared = [("resid.2", i) for i in range(20)]
    sels = {"arithmetic": _selection(shared + [("resid.1", i) for i in range(10)]),
            "colour": _selection(shared + [("resid.1", i) for i in range(10, 20)]),
            "cipher": _selection([("resid.1", i) for i in range(30, 60)])}
    widths = {"resid.1": 500, "resid.2": 500}
    matrix, overlaps = inter_task_consistency(sels, universes={t: widths for t in sels})
    assert list(matrix.index) == list(matrix.columns) == ["arithmetic", "colour", "cipher"]
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T) and (np.diag(matrix) == 1).all()
    assert matrix.loc["arithmetic", "colour"] == pytest.approx(20 / 40)
    assert overlaps[("arithmetic", "colour")].p_value < 1e-10
    assert overlaps[("colour", "cipher")].intersection == 0
    assert overlaps[("colour", "cipher")].p_value == 1.0
    metrics = inter_metrics(overlaps)
    assert set(metrics) == {f"consistency/inter/{a}_vs_{b}/{f}" for a, b in overlaps
                            for f in ("jaccard", "expected_jaccard", "p_value")}
    assert all(MLFLOW_NAME.match(k) for k in metrics)
    same, _ = inter_task_consistency(sels, 1000)
    assert same.equals(matrix)

    with pytest.raises(ValueError, match="tasks do not share a model: 'arithmetic' and 'colour'"):
        inter_task_consistency(sels, universes={"arithmetic": widths, "cipher": widths,
                                                "colour": {"resid.1": 500, "resid.2": 768}})
    with pytest.raises(ValueError, match="outside"):
        inter_task_consistency(sels, universes={t: {"resid.1": 40, "resid.2": 500} for t in sels})
    with pytest.raises(ValueError, match="universe_size"):
        inter_task_consistency(sels, 999, universes={t: widths for t in sels})
    with pytest.raises(ValueError, match="need >= 2 tasks"):
        inter_task_consistency({"arithmetic": sels["arithmetic"]}, 1000)
    with pytest.raises(ValueError, match="metric name"):
        inter_task_consistency({"a~b": sels["colour"], "c": sels["cipher"]}, 1000)
    assert site_widths(_stats(0)) == {"resid.1": 30, "resid.2": 30}


def test_overlap_matrix_figure_renders():
    sels = {t: _selection([("resid.1", i) for i in range(s, s + 10)])
            for t, s in (("arithmetic", 0), ("colour", 5), ("cipher", 50))}
    matrix, overlaps = inter_task_consistency(sels, 100)
    expected = overlap_matrix(list(sels), overlaps, "expected_jaccard", diagonal=math.nan)
    fig = overlap_matrix_figure(matrix, expected)
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 9 and "1.00" in texts and any("chance" in t for t in texts)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="square"):
        overlap_matrix_figure(matrix.iloc[:2])
