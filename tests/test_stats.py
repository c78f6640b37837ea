"""Streaming statistics equal direct numpy ones; ranking finds planted neurons, not chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from memgen.analysis.capture import collect_features
from memgen.analysis.neurons import SiteStats
from memgen.analysis.stats import (
    StreamingMoments,
    lowest_neurons,
    neuron_stats,
    rank_neurons,
    select_neurons,
    shuffle_control,
    site_summary,
    stream_stats,
)
from memgen.reporting.plots.neurons import abs_r_heatmap
from tests.helpers_analysis import MODELS, PROMPTS, char_tokenizer

BATCHES = [1, 50, 7, 100, 99, 3]  # uneven, the first one single-class


def _data(seed: int = 0, n: int = sum(BATCHES), d: int = 13):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=d) + y[:, None] * rng.normal(size=d)
    x[:, 0] = 5.0  # constant neuron: r undefined -> 0
    x[:, 1] = 1e4 + rng.normal(size=n) * 1e-2 + 1e-2 * y  # large offset, small spread
    return x.astype(np.float32), y


def _numpy_stats(x: np.ndarray, y: np.ndarray):
    x = x.astype(np.float64)
    mean_mem, mean_gen = x[y == 1].mean(0), x[y == 0].mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(x.T, y)[-1, :-1]
    return mean_mem, mean_gen, mean_mem - mean_gen, np.nan_to_num(r)


def _stream(x: np.ndarray, y: np.ndarray, sizes=BATCHES) -> StreamingMoments:
    acc, start = StreamingMoments(), 0
    for size in sizes:
        acc.update(torch.from_numpy(x[start:start + size]), torch.from_numpy(y[start:start + size]))
        start += size
    return acc


def test_streaming_equals_numpy_on_uneven_batches():
    x, y = _data()
    stats = _stream(x, y).result("resid.2")
    mean_mem, mean_gen, nmd, r = _numpy_stats(x, y)
    assert (stats.site, stats.n_mem, stats.n_gen) == ("resid.2", int(y.sum()), int((1 - y).sum()))
    np.testing.assert_allclose(stats.mean_mem.numpy(), mean_mem, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.mean_gen.numpy(), mean_gen, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.nmd.numpy(), nmd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.r.numpy(), r, atol=1e-5)
    assert stats.r[0] == 0 and stats.nmd[0] == 0 and stats.mean_mem[0] == 5.0
    assert abs(r[1]) > 0.1  # the offset neuron's correlation survives


def test_merge_equals_one_stream_and_memory_is_constant():
    x, y = _data(seed=1)
    whole = _stream(x, y)
    left, right = _stream(x[:120], y[:120], [60, 60]), _stream(x[120:], y[120:], [80, 60])
    merged = left.merge(right).result("mlp.1")
    expected = whole.result("mlp.1")
    for field in ("mean_mem", "mean_gen", "nmd", "r"):
        torch.testing.assert_close(getattr(merged, field), getattr(expected, field))
    small = _stream(x[:40], y[:40], [40])
    assert small.state_bytes() == whole.state_bytes() == 6 * 13 * 8


def test_validation_errors():
    acc = StreamingMoments()
    with pytest.raises(ValueError, match="labels"):
        acc.update(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        acc.update(torch.zeros(3, 2), torch.tensor([0, 1]))
    acc.update(torch.zeros(3, 2), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="width"):
        acc.update(torch.zeros(3, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="MEM and GEN"):
        acc.result("resid.1")


def _planted(n: int = 400, d: int = 40, seed: int = 0):
    """Two sites of noise; resid.2[7] and mlp.1[3] carry the label, resid.2[7] more strongly."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=gen) < 0.5).long()
    feats = {"resid.2": torch.randn(n, d, generator=gen), "mlp.1": torch.randn(n, d, generator=gen)}
    feats["resid.2"][:, 7] += 2.0 * y
    feats["mlp.1"][:, 3] -= 1.0 * y
    return feats, y


def test_planted_neurons_rank_first_and_shuffles_sit_at_chance():
    feats, y = _planted()
    stats = stream_stats([({s: x[a:a + 64] for s, x in feats.items()}, y[a:a + 64])
                          for a in range(0, len(y), 64)])
    table = rank_neurons(stats)
    assert len(table) == 80 and list(table["rank"]) == list(range(1, 81))
    top = table.head(2)
    assert list(zip(top["site"], top["index"], strict=True)) == [("resid.2", 7), ("mlp.1", 3)]
    assert top["r"].iloc[0] > 0.6 and top["r"].iloc[1] < -0.3
    assert list(top["kind"]) == ["resid", "mlp"] and list(top["layer"]) == [2, 1]
    assert (table["abs_r"].diff().dropna() <= 0).all()

    chance = shuffle_control(feats, y, n_shuffles=50, seed=0)
    assert set(chance["sites"]) == {"resid.2", "mlp.1"}
    for site in chance["sites"].values():
        assert site["mean_abs_r"] < 0.06 and site["max_abs_r_mean"] < 0.2
    assert chance["abs_r_q"] < 0.12 and chance["max_abs_r_q"] < 0.25
    assert top["abs_r"].iloc[1] > 2 * chance["max_abs_r_q"]
    again = shuffle_control(feats, y, n_shuffles=50, seed=0)
    assert again == chance


def test_selection_counts_order_and_errors():
    feats, y = _planted()
    stats = stream_stats([(feats, y)])
    sel = select_neurons(stats, top_k=2)
    assert sel.keys() == [("resid.2", 7), ("mlp.1", 3)]
    torch.testing.assert_close(sel.nmd, torch.stack([stats["resid.2"].nmd[7],
                                                     stats["mlp.1"].nmd[3]]))
    assert len(select_neurons(stats, top_fraction=0.05)) == 4
    assert len(select_neurons(stats, top_fraction=0.001)) == 1
    only_mlp = select_neurons(stats, top_k=1, sites=["mlp.1"])
    assert only_mlp.keys() == [("mlp.1", 3)]
    for kwargs in ({"top_k": 81}, {}, {"top_k": 0}, {"top_k": 1, "top_fraction": 0.1}):
        with pytest.raises(ValueError, match="top_k"):
            select_neurons(stats, **kwargs)
    with pytest.raises(ValueError, match="resid.9"):
        select_neurons(stats, top_k=1, sites=["resid.9"])

    low = lowest_neurons(stats, 5)
    table = rank_neurons(stats)
    assert set(low.keys()) == set(zip(table["site"].tail(5), table["index"].tail(5), strict=True))
    assert (low.r.abs().diff() >= 0).all()
    with pytest.raises(ValueError, match="k"):
        lowest_neurons(stats, 81)


def test_ties_break_by_site_then_index():
    def flat(site: str, d: int) -> SiteStats:
        ones = torch.ones(d)
        return SiteStats(site, 5, 5, ones, ones * 0, ones, torch.full((d,), 0.5))
    stats = {site: flat(site, 2) for site in ("mlp.1", "resid.3", "resid.1")}
    table = rank_neurons(stats)
    assert list(zip(table["site"], table["index"], strict=True)) == [
        ("resid.1", 0), ("resid.1", 1), ("resid.3", 0), ("resid.3", 1), ("mlp.1", 0), ("mlp.1", 1)]
    assert select_neurons(stats, top_k=3).keys() == [("resid.1", 0), ("resid.1", 1), ("resid.3", 0)]


def test_site_summary_keys_and_heatmap(tmp_path):
    feats, y = _planted()
    stats = stream_stats([(feats, y)])
    summary = site_summary(stats)
    assert set(summary) == {"neurons/max_abs_r/resid.2", "neurons/mean_abs_nmd/resid.2",
                            "neurons/max_abs_r/mlp.1", "neurons/mean_abs_nmd/mlp.1"}
    expected = float(stats["resid.2"].r.abs().max())
    assert summary["neurons/max_abs_r/resid.2"] == pytest.approx(expected)
    fig = abs_r_heatmap(rank_neurons(stats))
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # two panels, two colorbars
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["resid", "mlp"]
    image = panels[0].images[0].get_array()  # one row (layer 2) x 40 neurons
    assert image.shape == (1, 40)
    np.testing.assert_allclose(image[0], stats["resid.2"].r.abs().numpy(), rtol=1e-6)
    fig.savefig(tmp_path / "abs_r.png")
    assert (tmp_path / "abs_r.png").stat().st_size > 0


def test_neuron_stats_on_a_model_equals_numpy():
    tokenizer = char_tokenizer()
    model = MODELS["gpt2"](len(tokenizer))
    labels = [1, 0, 0, 1, 1, 0, 1, 0]
    stats = neuron_stats(model, tokenizer, PROMPTS, labels, ["resid.1", "mlp.2"], batch_size=3)
    feats = collect_features(model, tokenizer, PROMPTS, ["resid.1", "mlp.2"], batch_size=8)
    for site, x in feats.items():
        mean_mem, mean_gen, nmd, r = _numpy_stats(x.numpy(), np.array(labels))
        np.testing.assert_allclose(stats[site].nmd.numpy(), nmd, atol=1e-4)
        np.testing.assert_allclose(stats[site].r.numpy(), r, atol=1e-4)
