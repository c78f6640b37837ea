"""Linear probes that predict behavior (MEM=1, GEN=0) from one site's activations.

A probe's accuracy only means something next to baselines, so ``probe_sites`` always reports
them alongside: the majority class of the train split, a probe trained on shuffled labels, and
a probe restricted to the selected top-k neurons. The pipeline adds the input-only baseline
(``input_baseline``: a probe on the whole prompt's tokens); without it, ``input_only_acc`` falls
back to the ``resid.0`` probe, which at the last token sees little of the input.

Probes are L2-regularized logistic regressions fitted full batch with L-BFGS and a strong-Wolfe
line search: the loss is convex and starts from zero weights, so the fit is deterministic and
reaches the optimum in tens of iterations (Adam needs many more steps at the same tolerance).
Features are standardized with the train split's mean and std, stored in the probe.

Splits come from the caller; train and evaluation must be disjoint (``check_disjoint``).
Minimum sizes: at least ``MIN_TRAIN_PER_CLASS`` (2) examples of each class in train and
``MIN_EVAL_PER_CLASS`` (1) in evaluation, i.e. N >= 4 in train and N >= 2 in evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.sites import parse_site

if TYPE_CHECKING:
    from memgen.analysis.lens import LensReport

MIN_TRAIN_PER_CLASS = 2
MIN_EVAL_PER_CLASS = 1
INPUT_ONLY_SITE = "resid.0"
TOPK_NAME = "topk"


class LinearProbe(nn.Module):
    """Logistic regression on standardized features; ``forward`` returns logits [N]."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())
        self.linear = nn.Linear(mean.numel(), 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def width(self) -> int:
        return int(self.mean.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.mean.device, dtype=self.mean.dtype)
        return self.linear((x - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(MEM) per row, in float64 so that confident scores do not tie at 1.0."""
        return torch.sigmoid(self(x).double())


def _check_xy(x: torch.Tensor, y: torch.Tensor, split: str, min_per_class: int) -> None:
    """One-line ValueErrors for shape, label and class-count problems of one split."""
    if x.ndim != 2:
        raise ValueError(f"{split} features: expected [N, D], got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.numel() != x.shape[0]:
        raise ValueError(
            f"{split} labels: expected [N] with N={x.shape[0]}, got shape {tuple(y.shape)}"
        )
    if not ((y == 0) | (y == 1)).all():
        raise ValueError(f"{split} labels: expected only 0 (GEN) and 1 (MEM)")
    n_mem = int((y == 1).sum())
    n_gen = int((y == 0).sum())
    if n_mem == 0 or n_gen == 0:
        only = "MEM" if n_gen == 0 else "GEN"
        raise ValueError(f"{split} split has one class only ({y.numel()} x {only}); need both")
    if min(n_mem, n_gen) < min_per_class:
        raise ValueError(
            f"{split} split too small: {n_mem} MEM / {n_gen} GEN, "
            f"need >= {min_per_class} of each class"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{split} features contain NaN or inf")


def train_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    max_iter: int = 200,
    initial_step: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> LinearProbe:
    """Fit a logistic-regression probe on ``x_train`` [N, D] and labels [N] (1=MEM, 0=GEN).

    ``max_iter`` caps the L-BFGS iterations, ``initial_step`` is its first step (the line
    search adapts it), ``weight_decay`` is the L2 penalty ``wd/2 * ||w||^2`` on the weights
    (not the bias).
    Zero initialization makes the result independent of ``seed``. The caller's random stream
    is left alone: probes also run inside training (callbacks), where reseeding the global RNG
    would change the training run.
    """
    _check_xy(x_train, y_train, "train", MIN_TRAIN_PER_CLASS)
    if max_iter < 1:
        raise ValueError(f"max_iter: expected >= 1, got {max_iter}")
    x = x_train.detach().float()
    y = y_train.detach().to(device=x.device, dtype=torch.float32)
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant features stay 0
    with torch.random.fork_rng(devices=[]):  # nn.Linear's init draws from the global RNG
        torch.manual_seed(seed)
        probe = LinearProbe(mean, std).to(x.device)
    opt = torch.optim.LBFGS(
        probe.linear.parameters(),
        lr=initial_step,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    # Standardized once, not in every L-BFGS evaluation: the same values as ``probe(x)``
    # without two [N, D] temporaries per evaluation.
    z = (x - probe.mean) / probe.std

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(probe.linear(z).squeeze(-1), y)
        loss = loss + 0.5 * weight_decay * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    probe.eval()
    return probe


def score_probe(probe: LinearProbe, x_eval: torch.Tensor, y_eval: torch.Tensor) -> dict[str, float]:
    """``{"acc", "auroc"}`` on a held-out split (threshold 0.5 on P(MEM))."""
    _check_xy(x_eval, y_eval, "eval", MIN_EVAL_PER_CLASS)
    if x_eval.shape[1] != probe.width:
        raise ValueError(f"eval features: probe expects width {probe.width}, got {x_eval.shape[1]}")
    proba = probe.predict_proba(x_eval).cpu()
    target = y_eval.detach().cpu().long()
    return {
        "acc": float(binary_accuracy(proba, target, threshold=0.5)),
        "auroc": float(binary_auroc(proba, target)),
    }


def check_disjoint(train_ids: Iterable[object], eval_ids: Iterable[object]) -> None:
    """Raise ValueError if any example id is in both splits (selection on eval leaks)."""
    as_list = [x.tolist() if isinstance(x, torch.Tensor) else x for x in (train_ids, eval_ids)]
    overlap = set(as_list[0]) & set(as_list[1])
    if overlap:
        shown = ", ".join(repr(i) for i in sorted(overlap, key=repr)[:5])
        raise ValueError(f"train and eval splits overlap in {len(overlap)} example ids: {shown}")


@dataclass
class ProbeReport:
    """Per-site probe scores and the baselines they must beat."""

    table: pd.DataFrame  # site, kind, layer, acc, auroc, shuffled_acc (NaN where not run),
    # and lens_acc once the answer lens is added
    best_site: str
    majority_class: int
    majority_acc: float
    shuffled_acc: float  # shuffled-label probe at the best site
    input_only_acc: float | None = None  # resid.0 probe; None when resid.0 was not captured
    topk_acc: float | None = None  # probe on the selected neurons; None without a selection
    topk_auroc: float | None = None
    n_topk: int = 0
    n_train: int = 0
    n_eval: int = 0
    probes: dict[str, LinearProbe] = field(default_factory=dict, repr=False)
    lens: LensReport | None = None  # the answer lens (``lens``); None without the model

    def add_lens(self, lens: LensReport) -> None:
        """Keep the answer lens and show it beside each resid site's probe (``lens_acc``)."""
        self.lens = lens
        self.table["lens_acc"] = self.table["site"].map(lens.acc).astype(float)

    @property
    def best_acc(self) -> float:
        return float(self.table.set_index("site").loc[self.best_site, "acc"])

    def metrics(self) -> dict[str, float]:
        """Numeric MLflow metrics; input-only and top-k keys only when those probes ran."""
        out: dict[str, float] = {}
        for row in self.table.itertuples(index=False):
            out[f"probe/acc/{row.site}"] = float(row.acc)
            out[f"probe/auroc/{row.site}"] = float(row.auroc)
        out["probe/best_acc"] = self.best_acc
        out["probe/baseline/majority_acc"] = self.majority_acc
        if self.input_only_acc is not None:
            out["probe/baseline/input_only_acc"] = self.input_only_acc
        out["probe/baseline/shuffled_acc"] = self.shuffled_acc
        if self.topk_acc is not None:
            out["probe/topk_acc"] = self.topk_acc
        if self.lens is not None:
            out |= self.lens.metrics()
        return out

    def tags(self) -> dict[str, str]:
        """Non-numeric results, for MLflow params or tags."""
        return {"probe/best_site": self.best_site}


def _check_sites(
    train_feats: Mapping[str, torch.Tensor], eval_feats: Mapping[str, torch.Tensor]
) -> list[str]:
    if not train_feats:
        raise ValueError("probe_sites: no sites given")
    if set(train_feats) != set(eval_feats):
        only_train = sorted(set(train_feats) - set(eval_feats))
        only_eval = sorted(set(eval_feats) - set(train_feats))
        raise ValueError(
            f"train and eval sites differ: only in train {only_train}, only in eval {only_eval}"
        )
    for site in train_feats:
        parse_site(site)
        d_train, d_eval = train_feats[site].shape[-1], eval_feats[site].shape[-1]
        if d_train != d_eval:
            raise ValueError(f"site '{site}': train width {d_train} != eval width {d_eval}")
    return list(train_feats)


def select_features(feats: Mapping[str, torch.Tensor], selection: NeuronSelection) -> torch.Tensor:
    """[N, K] matrix of the selected neurons' activations, in selection order."""
    missing = sorted(set(selection.sites) - set(feats))
    if missing:
        raise ValueError(f"selection uses sites that were not captured: {missing}")
    for site, i in selection.keys():
        if not 0 <= i < feats[site].shape[1]:
            raise ValueError(f"selection index {i} out of range for site '{site}'")
    cols = [feats[site][:, i] for site, i in selection.keys()]
    return torch.stack(cols, dim=1)


def probe_sites(
    train_feats: Mapping[str, torch.Tensor],
    y_train: torch.Tensor,
    eval_feats: Mapping[str, torch.Tensor],
    y_eval: torch.Tensor,
    selection: NeuronSelection | None = None,
    *,
    max_iter: int = 200,
    initial_step: float = 0.05,
    weight_decay: float = 1e-3,
    shuffled_per_site: bool = True,
    seed: int = 0,
) -> ProbeReport:
    """One probe per site plus baselines, trained on the train split and scored on eval.

    The best site is chosen by eval accuracy (ties: higher AUROC, then input order), so
    ``best_acc`` is optimistic by construction; per-site numbers are not. Labels are shuffled
    once with ``seed``; that permutation is reused at every site.
    """
    sites = _check_sites(train_feats, eval_feats)
    _check_xy(next(iter(train_feats.values())), y_train, "train", MIN_TRAIN_PER_CLASS)
    _check_xy(next(iter(eval_feats.values())), y_eval, "eval", MIN_EVAL_PER_CLASS)
    kw: dict[str, Any] = {"max_iter": max_iter, "initial_step": initial_step,
                          "weight_decay": weight_decay, "seed": seed}

    gen = torch.Generator().manual_seed(seed)
    y_shuffled = y_train[torch.randperm(y_train.numel(), generator=gen).to(y_train.device)]

    rows: list[dict[str, Any]] = []
    probes: dict[str, LinearProbe] = {}
    for site in sites:
        probe = train_probe(train_feats[site], y_train, **kw)
        scores = score_probe(probe, eval_feats[site], y_eval)
        shuffled = float("nan")
        if shuffled_per_site:
            shuffled_probe = train_probe(train_feats[site], y_shuffled, **kw)
            shuffled = score_probe(shuffled_probe, eval_feats[site], y_eval)["acc"]
        parsed = parse_site(site)
        row = {"site": site, "kind": parsed.kind, "layer": parsed.layer, **scores}
        rows.append({**row, "shuffled_acc": shuffled})
        probes[site] = probe
    table = pd.DataFrame(rows, columns=["site", "kind", "layer", "acc", "auroc", "shuffled_acc"])

    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["acc"], -rows[i]["auroc"], i))
    best = rows[order[0]]
    shuffled_best = best["shuffled_acc"]
    if not shuffled_per_site:
        shuffled_probe = train_probe(train_feats[best["site"]], y_shuffled, **kw)
        shuffled_best = score_probe(shuffled_probe, eval_feats[best["site"]], y_eval)["acc"]
        table.loc[order[0], "shuffled_acc"] = shuffled_best

    n_mem = int((y_train == 1).sum())
    majority = int(n_mem * 2 >= y_train.numel())  # ties go to MEM
    majority_acc = float((y_eval == majority).float().mean())

    input_only = None
    if INPUT_ONLY_SITE in sites:
        input_only = float(table.loc[sites.index(INPUT_ONLY_SITE), "acc"])

    topk_acc = topk_auroc = None
    n_topk = 0
    if selection is not None and len(selection) > 0:
        n_topk = len(selection)
        topk_probe = train_probe(select_features(train_feats, selection), y_train, **kw)
        topk_scores = score_probe(topk_probe, select_features(eval_feats, selection), y_eval)
        topk_acc, topk_auroc = topk_scores["acc"], topk_scores["auroc"]
        probes[TOPK_NAME] = topk_probe

    return ProbeReport(
        table=table,
        best_site=best["site"],
        majority_class=majority,
        majority_acc=majority_acc,
        shuffled_acc=float(shuffled_best),
        input_only_acc=input_only,
        topk_acc=topk_acc,
        topk_auroc=topk_auroc,
        n_topk=n_topk,
        n_train=int(y_train.numel()),
        n_eval=int(y_eval.numel()),
        probes=probes,
    )
