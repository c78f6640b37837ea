"""Per-neuron MEM-vs-GEN statistics: streaming moments, NMD, Pearson r, ranking, selection.

Everything is vectorized over neurons. Moments stream so memory does not grow with the number
of samples: each batch is reduced in float64 (sums shifted by the batch mean, per class by one
matmul) and merged with Chan et al.'s parallel update; two accumulators merge the same way
(e.g. across data-parallel workers). For a binary label the Pearson r is the point-biserial
correlation, computed exactly from the per-class counts, means and sums of squares:
``r = (mean_mem - mean_gen) * sqrt(p * (1 - p)) / std(x)`` with ``p`` the MEM share and
population ``std``, which equals ``np.corrcoef``. A neuron that is constant over all samples has
r = 0 and NMD = 0 exactly (tracked by its running min and max, not by a float threshold).

Ranking is global over sites by abs(r); ties break by site (resid before mlp, then layer) and
then by index, so rankings are reproducible whatever the dict order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from memgen.analysis.capture import SiteSpec, iter_feature_batches
from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.sites import SITE_KINDS, parse_site, resolve_sites


def _as_labels(y: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    """Labels as a bool tensor (MEM=True); anything but 0/1 or a length mismatch fails."""
    y = torch.as_tensor(y).flatten()
    if y.numel() != n:
        raise ValueError(f"labels: expected {n} values (one per sample), got {y.numel()}")
    if y.dtype != torch.bool and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("labels: expected 1 (MEM) or 0 (GEN)")
    return y.bool()


class StreamingMoments:
    """Per-class count, mean and sum of squared deviations of one site's neurons.

    ``update(x [B, D], y [B])`` with y = 1 for MEM and 0 for GEN; ``result(site)`` gives
    the SiteStats. State is six float64 [D] vectors, independent of the number of samples.
    """

    def __init__(self) -> None:
        self.width: int | None = None
        self.count = [0, 0]  # index 0: GEN, 1: MEM
        self.mean: list[torch.Tensor] = []
        self.m2: list[torch.Tensor] = []
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def _init(self, width: int, device: torch.device) -> None:
        self.width = width
        zeros = torch.zeros(width, dtype=torch.float64, device=device)
        self.mean = [zeros.clone(), zeros.clone()]
        self.m2 = [zeros.clone(), zeros.clone()]
        self.lo = torch.full_like(zeros, math.inf)
        self.hi = torch.full_like(zeros, -math.inf)

    def _merge_class(self, c: int, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        """Chan's parallel update of one class with a chunk's (n, mean, M2)."""
        n_a = self.count[c]
        n = n_a + n_b
        delta = mean_b - self.mean[c]
        self.mean[c] = self.mean[c] + delta * (n_b / n)
        self.m2[c] = self.m2[c] + m2_b + delta.square() * (n_a * n_b / n)
        self.count[c] = n

    def update(self, x: torch.Tensor, y: torch.Tensor | Sequence[int]) -> None:
        if x.ndim != 2:
            raise ValueError(f"x: expected [batch, width], got shape {tuple(x.shape)}")
        labels = _as_labels(y, x.shape[0]).to(x.device)
        if self.width is None:
            self._init(x.shape[1], x.device)
        elif x.shape[1] != self.width:
            raise ValueError(f"x: expected width {self.width}, got {x.shape[1]}")
        if x.shape[0] == 0:
            return
        x = x.detach().to(self.mean[0].device)
        assert self.lo is not None and self.hi is not None  # set by _init with the width
        self.lo = torch.minimum(self.lo, x.amin(0).double())
        self.hi = torch.maximum(self.hi, x.amax(0).double())
        # One float64 buffer, shifted by the batch mean (stable sums of squares), reduced per
        # class by a [2, B] @ [B, D] matmul instead of copying each class's rows.
        xc = x.to(torch.float64, copy=True)
        shift = xc.mean(0)
        xc -= shift
        onehot = torch.stack([~labels, labels]).to(torch.float64)
        n_b = onehot.sum(1).tolist()
        sums = onehot @ xc
        squares = onehot @ xc.square_()
        for c in (0, 1):
            if n_b[c]:
                n = int(n_b[c])
                self._merge_class(c, n, shift + sums[c] / n,
                                  (squares[c] - sums[c].square() / n).clamp_min(0))

    def merge(self, other: StreamingMoments) -> StreamingMoments:
        """Add another accumulator's samples to this one (same result as one stream)."""
        if other.width is None:
            return self
        if self.width is None:
            self._init(other.width, other.mean[0].device)
        elif other.width != self.width:
            raise ValueError(f"merge: widths differ ({self.width} vs {other.width})")
        for c in (0, 1):
            if other.count[c]:
                self._merge_class(c, other.count[c], other.mean[c], other.m2[c])
        assert self.lo is not None and self.hi is not None  # set by _init with the width
        assert other.lo is not None and other.hi is not None
        self.lo = torch.minimum(self.lo, other.lo)
        self.hi = torch.maximum(self.hi, other.hi)
        return self

    def state_bytes(self) -> int:
        """Bytes held by the accumulator's tensors (constant in the number of samples)."""
        tensors = [*self.mean, *self.m2, *(t for t in (self.lo, self.hi) if t is not None)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def result(self, site: str) -> SiteStats:
        n_gen, n_mem = self.count
        if not (n_gen and n_mem):
            raise ValueError(f"site '{site}': statistics need MEM and GEN samples "
                             f"(got {n_mem} MEM, {n_gen} GEN)")
        n = n_gen + n_mem
        assert self.lo is not None and self.hi is not None  # both classes were seen
        constant = self.lo == self.hi
        mean_gen = torch.where(constant, self.lo, self.mean[0])
        mean_mem = torch.where(constant, self.lo, self.mean[1])
        nmd = mean_mem - mean_gen
        var = (self.m2[0] + self.m2[1] + nmd.square() * (n_gen * n_mem / n)) / n
        p = n_mem / n
        r = nmd * math.sqrt(p * (1 - p)) / var.sqrt()
        r = torch.where(constant | (var <= 0), torch.zeros_like(r), r).clamp(-1.0, 1.0)
        f32 = torch.float32
        return SiteStats(site=site, n_mem=n_mem, n_gen=n_gen, mean_mem=mean_mem.to(f32),
                         mean_gen=mean_gen.to(f32), nmd=nmd.to(f32), r=r.to(f32))


def stream_stats(batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]
                 ) -> dict[str, SiteStats]:
    """SiteStats per site from an iterable of ``({site: [B, D]}, labels [B])``."""
    moments: dict[str, StreamingMoments] = {}
    for features, y in batches:
        for site, x in features.items():
            moments.setdefault(site, StreamingMoments()).update(x, y)
    return {site: m.result(site) for site, m in moments.items()}


def neuron_stats(model: nn.Module, tokenizer, prompts: Sequence[str],
                 labels: torch.Tensor | Sequence[int], sites: SiteSpec,
                 batch_size: int = 128) -> dict[str, SiteStats]:
    """Capture the last prompt token at each site and stream it into per-class moments."""
    y = _as_labels(labels, len(prompts))
    names = resolve_sites(model, sites)
    batches = iter_feature_batches(model, tokenizer, prompts, names, batch_size)
    starts = range(0, len(prompts), batch_size)
    return stream_stats((f, y[s:s + batch_size]) for f, s in zip(batches, starts, strict=True))


# -- ranking and selection ------------------------------------------------------------------

def _site_order(stats: dict[str, SiteStats], sites: Sequence[str] | None = None) -> list[str]:
    """Sites in canonical order (resid before mlp, then layer); unknown names fail by name."""
    names = list(stats) if sites is None else list(dict.fromkeys(sites))
    if not names:
        raise ValueError("sites: no site to rank (empty statistics or site list)")
    for name in names:
        if name not in stats:
            raise ValueError(f"site '{name}': no statistics (have {sorted(stats)})")
    return sorted(names, key=lambda s: (SITE_KINDS.index(parse_site(s).kind), parse_site(s).layer))


def _flat(stats: dict[str, SiteStats], sites: Sequence[str] | None = None
          ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(site order, site id, index, nmd, r) of every neuron, concatenated in canonical order."""
    order = _site_order(stats, sites)
    widths = torch.tensor([stats[s].width for s in order], dtype=torch.long)
    site_id = torch.repeat_interleave(torch.arange(len(order)), widths)
    index = torch.cat([torch.arange(w) for w in widths.tolist()])
    nmd = torch.cat([stats[s].nmd.float().cpu() for s in order])
    r = torch.cat([stats[s].r.float().cpu() for s in order])
    return order, site_id, index, nmd, torch.nan_to_num(r)


def _take(order: list[str], site_id: torch.Tensor, index: torch.Tensor, nmd: torch.Tensor,
          r: torch.Tensor, picked: torch.Tensor) -> NeuronSelection:
    return NeuronSelection(sites=[order[i] for i in site_id[picked].tolist()],
                           indices=index[picked].clone(), nmd=nmd[picked].clone(),
                           r=r[picked].clone())


def rank_neurons(stats: dict[str, SiteStats]) -> pd.DataFrame:
    """One row per neuron over all sites, best (highest abs r) first; ``rank`` starts at 1;
    ``n_mem`` / ``n_gen`` are the MEM and GEN samples its statistics came from."""
    order, site_id, index, nmd, r = _flat(stats)
    perm = torch.sort(r.abs(), descending=True, stable=True).indices
    parsed = [parse_site(s) for s in order]
    ids = site_id[perm].numpy()
    mean_mem = torch.cat([stats[s].mean_mem.float().cpu() for s in order])
    mean_gen = torch.cat([stats[s].mean_gen.float().cpu() for s in order])
    return pd.DataFrame({
        "site": np.array(order, dtype=object)[ids],
        "kind": np.array([p.kind for p in parsed], dtype=object)[ids],
        "layer": np.array([p.layer for p in parsed], dtype=np.int64)[ids],
        "index": index[perm].numpy(),
        "mean_mem": mean_mem[perm].numpy(),
        "mean_gen": mean_gen[perm].numpy(),
        "nmd": nmd[perm].numpy(),
        "r": r[perm].numpy(),
        "abs_r": r[perm].abs().numpy(),
        "rank": np.arange(1, len(perm) + 1, dtype=np.int64),
        # the samples behind each neuron's numbers, so the table can be checked on its own
        "n_mem": np.array([stats[s].n_mem for s in order], dtype=np.int64)[ids],
        "n_gen": np.array([stats[s].n_gen for s in order], dtype=np.int64)[ids],
    })


def _count(total: int, top_k: int | None, top_fraction: float | None) -> int:
    if (top_k is None) == (top_fraction is None):
        raise ValueError("select_neurons: give exactly one of top_k or top_fraction")
    if top_fraction is not None:
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction: expected a value in (0, 1], got {top_fraction}")
        top_k = max(1, round(top_fraction * total))
    assert top_k is not None
    if not 1 <= top_k <= total:
        raise ValueError(f"top_k: expected 1..{total} (the number of neurons), got {top_k}")
    return int(top_k)


def select_neurons(stats: dict[str, SiteStats], top_k: int | None = None,
                   top_fraction: float | None = None,
                   sites: Sequence[str] | None = None) -> NeuronSelection:
    """The neurons with the highest abs(r) (or ``priority``, where the statistics carry one),
    globally over ``sites`` (default: all), best first.

    ``top_fraction`` is a share of all neurons in the pool (at least one neuron).
    """
    order, site_id, index, nmd, r = _flat(stats, sites)
    k = _count(len(r), top_k, top_fraction)
    picked = torch.sort(_ranking_key(stats, order, r), descending=True, stable=True).indices[:k]
    return _take(order, site_id, index, nmd, r, picked)


def _ranking_key(stats: dict[str, SiteStats], order: list[str], r: torch.Tensor) -> torch.Tensor:
    """abs(r), or every site's ``priority`` where the statistics carry one (steering's
    attribution ranking); a pool that mixes the two has no common scale and is refused."""
    given = [stats[s].priority is not None for s in order]
    if not any(given):
        return r.abs()
    if not all(given):
        raise ValueError("select_neurons: some sites carry a ranking priority and some do not "
                         f"({[s for s, g in zip(order, given, strict=True) if not g]} lack one)")
    key = torch.cat([stats[s].priority.float().cpu() for s in order])  # type: ignore[union-attr]
    if key.numel() != r.numel():
        raise ValueError("select_neurons: a site's priority does not match its width")
    return torch.nan_to_num(key, nan=-torch.inf)


def lowest_neurons(stats: dict[str, SiteStats], k: int,
                   sites: Sequence[str] | None = None) -> NeuronSelection:
    """The k neurons with the lowest abs(r), lowest first: a steering control.

    Neurons whose NMD is exactly zero (constant ones) are skipped: shifting them by
    alpha * NMD would do nothing and make the control vacuous.
    """
    order, site_id, index, nmd, r = _flat(stats, sites)
    candidates = torch.nonzero(nmd != 0).flatten()
    if not 1 <= k <= len(candidates):
        raise ValueError(f"k: expected 1..{len(candidates)} (neurons with a nonzero NMD), got {k}")
    picked = candidates[torch.sort(r[candidates].abs(), stable=True).indices[:k]]
    return _take(order, site_id, index, nmd, r, picked)


# -- chance level and summaries ---------------------------------------------------------------

def shuffle_control(features: dict[str, torch.Tensor], labels: torch.Tensor | Sequence[int],
                    n_shuffles: int = 20, seed: int = 0, quantile: float = 0.95) -> dict:
    """abs(r) under permuted labels: what "differentiation" looks like by chance.

    Returns ``{"n_shuffles", "seed", "quantile", "sites": {site: {"max_abs_r_mean",
    "max_abs_r_q", "mean_abs_r"}}, "max_abs_r_q", "abs_r_q"}``: per site, the max abs(r) over
    neurons averaged over shuffles and its ``quantile``, and the mean abs(r); pooled over sites,
    the ``quantile`` of the per-shuffle maximum (chance level for the top neuron) and of all
    neurons' abs(r) (chance level for a typical neuron). All shuffles go through one matmul.
    """
    if n_shuffles < 1:
        raise ValueError(f"n_shuffles: expected >= 1, got {n_shuffles}")
    if not features:
        raise ValueError("features: expected at least one site")
    n = next(iter(features.values())).shape[0]
    y = _as_labels(labels, n).double()
    if not 0 < int(y.sum()) < n:
        raise ValueError("labels: shuffle_control needs both MEM and GEN samples")
    gen = torch.Generator().manual_seed(seed)
    perms = torch.argsort(torch.rand(n_shuffles, n, generator=gen), dim=1)
    yc = (y - y.mean())[perms].T  # [N, S]; every permutation has the same norm
    y_norm = yc[:, 0].norm()
    per_site, maxima, pooled = {}, [], []
    for site, x in features.items():
        if x.shape[0] != n:
            raise ValueError(f"site '{site}': expected {n} samples, got {x.shape[0]}")
        xc = x.to(torch.float64, copy=True)  # one float64 copy, centred in place
        xc -= xc.mean(0)
        x_norm = xc.norm(dim=0)
        r = (xc.T @ yc) / (x_norm[:, None] * y_norm)  # [D, S]
        abs_r = torch.where(x_norm[:, None] > 0, r, torch.zeros_like(r)).abs().float()
        site_max = abs_r.amax(0)
        per_site[site] = {"max_abs_r_mean": float(site_max.mean()),
                          "max_abs_r_q": float(np.quantile(site_max.numpy(), quantile)),
                          "mean_abs_r": float(abs_r.mean())}
        maxima.append(site_max)
        pooled.append(abs_r.flatten().numpy())
    return {"n_shuffles": n_shuffles, "seed": seed, "quantile": quantile, "sites": per_site,
            "max_abs_r_q": float(np.quantile(torch.stack(maxima).amax(0).numpy(), quantile)),
            "abs_r_q": float(np.quantile(np.concatenate(pooled), quantile))}


def site_summary(stats: dict[str, SiteStats]) -> dict[str, float]:
    """Per-site summary metrics (``neurons/max_abs_r/<site>``, ``neurons/mean_abs_nmd/<site>``)."""
    out: dict[str, float] = {}
    for site in _site_order(stats):
        out[f"neurons/max_abs_r/{site}"] = float(stats[site].r.abs().max())
        out[f"neurons/mean_abs_nmd/{site}"] = float(stats[site].nmd.abs().mean())
    return out
