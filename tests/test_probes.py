"""Behavior probes: accuracy on easy and impossible data, baselines, errors and the figure."""

from __future__ import annotations

import pytest
import torch

from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.probes import (
    LinearProbe,
    check_disjoint,
    probe_sites,
    score_probe,
    train_probe,
)
from memgen.reporting.plots.probes import probe_accuracy_by_layer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny full-batch fits are dominated by thread wake-ups on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def separable(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels set by the sign of coordinate 0, with a gap of 2 between the classes."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.4).long()
    x = torch.randn(n, d, generator=g)
    x[:, 0] = (2 * y - 1) * (1 + torch.rand(n, generator=g))
    return x, y


def noise(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def site_feats(seed: int, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """resid.0 and mlp.1 carry no signal, resid.1 a weak one, resid.2 and mlp.2 a clean one."""
    x, y = separable(n, 8, seed)
    weak = noise(n, 8, seed + 1)
    weak[:, 3] += 0.5 * (2 * y - 1)
    feats = {
        "resid.0": noise(n, 8, seed + 2),
        "resid.1": weak,
        "resid.2": x,
        "mlp.1": noise(n, 16, seed + 3),
        "mlp.2": torch.cat([noise(n, 15, seed + 4), x[:, :1]], dim=1),
    }
    return feats, y


def test_separable_data_held_out() -> None:
    x, y = separable(500, 10, seed=0)
    probe = train_probe(x[:300], y[:300], seed=0)
    scores = score_probe(probe, x[300:], y[300:])
    assert scores["acc"] >= 0.99
    assert scores["auroc"] >= 0.99


def test_shuffled_labels_near_chance() -> None:
    x, y = separable(600, 50, seed=1)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    probe = train_probe(x[:400], y[:400][perm], seed=0)
    assert 0.35 <= score_probe(probe, x[400:], y[400:])["acc"] <= 0.65


def test_auroc_matches_hand_computed() -> None:
    probe = LinearProbe(torch.zeros(1), torch.ones(1))
    with torch.no_grad():
        probe.linear.weight.fill_(1.0)
    x = torch.tensor([[0.1], [0.4], [0.35], [0.8]])
    y = torch.tensor([0, 0, 1, 1])
    # positives beat negatives in 3 of the 4 (pos, neg) pairs: 0.35 < 0.4 is the miss.
    # P(MEM) = sigmoid(x) > 0.5 for all four, so only the two MEM rows are right.
    assert score_probe(probe, x, y) == pytest.approx({"auroc": 0.75, "acc": 0.5})


def test_training_is_deterministic() -> None:
    x, y = separable(120, 6, seed=2)
    a, b = train_probe(x, y, seed=3), train_probe(x, y, seed=3)
    assert torch.equal(a.linear.weight, b.linear.weight)


def test_training_a_probe_leaves_the_global_random_stream_alone() -> None:
    """Probes run inside training (callbacks): reseeding there would change the training."""
    x, y = separable(120, 6, seed=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_probe(x, y, seed=3)
    assert torch.equal(torch.rand(3), expected)


def test_probe_sites_report_and_baselines() -> None:
    train, y_train = site_feats(seed=10, n=240)
    evals, y_eval = site_feats(seed=20, n=120)
    selection = NeuronSelection(
        sites=["resid.2", "mlp.2", "resid.1"],
        indices=torch.tensor([0, 15, 3]),
        nmd=torch.ones(3),
        r=torch.ones(3),
    )
    report = probe_sites(train, y_train, evals, y_eval, selection, seed=0)

    assert list(report.table.columns) == ["site", "kind", "layer", "acc", "auroc", "shuffled_acc"]
    assert report.best_site in {"resid.2", "mlp.2"}
    assert report.tags() == {"probe/best_site": report.best_site}
    metrics = report.metrics()
    per_site = {f"probe/{m}/{s}" for s in train for m in ("acc", "auroc")}
    baselines = {
        "probe/best_acc",
        "probe/baseline/majority_acc",
        "probe/baseline/input_only_acc",
        "probe/baseline/shuffled_acc",
        "probe/topk_acc",
    }
    assert set(metrics) == per_site | baselines
    for row in report.table.itertuples():  # the metrics are the table's numbers
        assert metrics[f"probe/acc/{row.site}"] == pytest.approx(row.acc)
        assert metrics[f"probe/auroc/{row.site}"] == pytest.approx(row.auroc)
    assert metrics["probe/best_acc"] == pytest.approx(report.table["acc"].max())

    majority = int((y_train == 1).sum() * 2 >= len(y_train))
    assert metrics["probe/baseline/majority_acc"] == pytest.approx(
        (y_eval == majority).float().mean().item()
    )
    assert metrics["probe/best_acc"] >= 0.99
    assert metrics["probe/topk_acc"] >= 0.99
    assert metrics["probe/baseline/input_only_acc"] == metrics["probe/acc/resid.0"]
    assert metrics["probe/baseline/input_only_acc"] < 0.8
    assert 0.3 <= metrics["probe/baseline/shuffled_acc"] <= 0.7
    assert report.table["shuffled_acc"].notna().all()


def test_majority_hand_computed() -> None:
    x_train = noise(10, 3, 0)
    y_train = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])  # majority MEM
    x_eval = noise(5, 3, 1)
    y_eval = torch.tensor([1, 0, 0, 0, 1])  # 2 of 5 are MEM
    report = probe_sites(
        {"mlp.1": x_train}, y_train, {"mlp.1": x_eval}, y_eval, shuffled_per_site=False
    )
    assert report.majority_class == 1
    assert report.metrics()["probe/baseline/majority_acc"] == pytest.approx(0.4)
    assert "probe/baseline/input_only_acc" not in report.metrics()
    assert "probe/topk_acc" not in report.metrics()


@pytest.mark.parametrize(
    ("y_train", "y_eval", "message"),
    [
        ([1, 1, 1, 1, 1, 1], [0, 1], "train split has one class only"),
        ([1, 0, 1, 0, 1, 0], [1, 1], "eval split has one class only"),
        ([1, 1, 1, 1, 1, 0], [0, 1], "train split too small"),
    ],
)
def test_bad_splits_raise(y_train: list[int], y_eval: list[int], message: str) -> None:
    train = {"resid.1": noise(len(y_train), 4, 0)}
    evals = {"resid.1": noise(len(y_eval), 4, 1)}
    with pytest.raises(ValueError, match=message):
        probe_sites(train, torch.tensor(y_train), evals, torch.tensor(y_eval))


def test_sites_must_match() -> None:
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="train and eval sites differ"):
        probe_sites({"resid.1": noise(4, 2, 0)}, y, {"resid.2": noise(4, 2, 1)}, y)


def test_check_disjoint() -> None:
    check_disjoint([1, 2, 3], torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="overlap in 2 example ids"):
        check_disjoint(["a", "b", "c"], ["c", "b", "d"])


def test_figure_renders(tmp_path) -> None:
    train, y_train = site_feats(seed=30, n=60)
    evals, y_eval = site_feats(seed=40, n=30)
    selection = NeuronSelection(["resid.2"], torch.tensor([0]), torch.ones(1), torch.ones(1))
    report = probe_sites(train, y_train, evals, y_eval, selection, max_iter=50)
    fig = probe_accuracy_by_layer(report)
    assert fig.axes and fig.axes[0].get_lines()
    path = tmp_path / "probe_accuracy.png"
    fig.savefig(path)
    assert path.stat().st_size > 0


# -- the input-only baseline ------------------------------------------------------------------
def _digit_prompts(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return [f"Input:\n{rng.randint(10, 99)}+{rng.randint(10, 99)}\nTarget:\n" for _ in range(n)]


def test_input_only_baseline_learns_a_label_of_the_input_and_not_noise():
    """High accuracy when the label is a function of the prompt (its first addend's parity:
    a token in the middle of the prompt, not the shared last token), chance when it is not."""
    from memgen.analysis.input_baseline import input_only_accuracy, token_features
    from memgen.training.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(["Input:\nTarget+0123456789"])
    train, test = _digit_prompts(300, 0), _digit_prompts(200, 1)

    def parity(prompts):
        return torch.tensor([int(p.split("\n")[1][1]) % 2 for p in prompts])

    acc = input_only_accuracy(tok, train, parity(train), test, parity(test))
    assert acc >= 0.95
    gen = torch.Generator().manual_seed(0)
    noise_train = torch.randint(0, 2, (300,), generator=gen)
    noise_test = torch.randint(0, 2, (200,), generator=gen)
    acc = input_only_accuracy(tok, train, noise_train, test, noise_test)
    assert 0.35 <= acc <= 0.65  # chance: 200 coin flips stay within +-0.15 of 0.5 w.p. > 0.9999
    # the last token is shared by every prompt, so a last-token feature alone is constant
    x, columns = token_features([[5, 3, 9], [4, 9]])
    assert x[:, columns[(0, 9)]].tolist() == [1.0, 1.0]
    assert x[0, columns[(-1, 9)]] == 1.0 and x[1, columns[(1, 4)]] == 1.0
