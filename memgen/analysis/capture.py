"""Read neuron activations at the last prompt token, batched and left-padded.

The paper reads every neuron at the last prompt token. Under left padding that token sits at
position -1 of every row, so one forward pass per batch gives all of them. Capture hooks read
only ``h[:, -1]`` (a view) so the full [B, T, D] activation is never kept, and they are always
removed, also on error. ``iter_feature_batches`` registers hooks per batch and holds none while
the consumer runs, so abandoning the generator leaves the model clean.

Memory is bounded by the results. ``collect_features`` allocates each site's [N, D] float32
result once, before the first forward pass, and the hooks ``copy_`` each batch's last-token rows
straight into it: nothing that outlives a batch is allocated while a forward pass's transients
come and go. Appending small per-batch copies instead (and ``cat``-ing them) made glibc's heap
grow by roughly one forward pass per batch, because every kept copy split a freed hole: 4.1 GB of
RSS for 126 MB of results on a 6x512 GPT-2 (issue 22; ``benchmarks/bench_capture_memory.py``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from memgen.analysis import generation
from memgen.analysis.sites import hook_site, resolve_sites, site_width, unwrap

SiteSpec = str | Sequence[str]


class LastTokenRecorder(Mapping[str, torch.Tensor]):
    """Activations at position -1, one chunk per forward pass and site.

    ``recorder[site]`` concatenates the passes recorded so far ([sum of B, D]); during
    generation with a KV cache every decoding step is one pass. Only sites with at least one
    recorded pass are keys.
    """

    def __init__(self, sites: Sequence[str]) -> None:
        self.sites = list(sites)
        self._chunks: dict[str, list[torch.Tensor]] = {site: [] for site in self.sites}

    def record(self, site: str, h: torch.Tensor) -> None:
        """Copy the last position; ``copy=True`` so the full activation can be freed."""
        self._chunks[site].append(h[:, -1].detach().to("cpu", torch.float32, copy=True))

    def passes(self, site: str) -> list[torch.Tensor]:
        """The recorded [B, D] chunks of one site, one per forward pass."""
        return list(self._chunks[site])

    def clear(self) -> None:
        for chunks in self._chunks.values():
            chunks.clear()

    def __getitem__(self, site: str) -> torch.Tensor:
        chunks = self._chunks.get(site)
        if not chunks:
            raise KeyError(f"site '{site}': nothing recorded (not captured or no forward pass)")
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def __iter__(self) -> Iterator[str]:
        return (site for site in self.sites if self._chunks[site])

    def __len__(self) -> int:
        return sum(1 for _ in self)


@contextmanager
def capture_last_token(model: nn.Module, sites: SiteSpec) -> Iterator[LastTokenRecorder]:
    """Record ``h[:, -1]`` at each site on every forward pass while the block runs."""
    names = resolve_sites(model, sites)
    recorder = LastTokenRecorder(names)
    handles = []
    try:
        for site in names:
            handles.append(hook_site(model, site, functools.partial(recorder.record, site)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False


def forward_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Keyword arguments of one capture forward pass on a left-padded batch.

    Position ids follow the attention mask exactly as ``generate`` computes them, so a padded
    prompt is read at the same positions as when it is generated from (and as unpadded).
    Only the last position's logits are computed when the model allows it: capture needs none,
    and a large vocabulary times the full sequence is the biggest tensor of the pass.
    """
    kwargs: dict[str, Any] = {**batch,
                              "position_ids": generation.position_ids(batch["attention_mask"]),
              "use_cache": False}
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    return kwargs


class _RowWriter:
    """Hook body that copies ``h[:, -1]`` into rows ``[start, start + B)`` of preallocated buffers.

    ``copy_`` converts dtype and device on the way (a bf16 GPU activation lands in the float32
    CPU buffer) without an intermediate tensor; ``start`` moves with the batch.
    """

    def __init__(self, buffers: dict[str, torch.Tensor]) -> None:
        self.buffers = buffers
        self.start = 0

    def hook(self, site: str):
        buffer = self.buffers[site]

        def fn(h: torch.Tensor) -> None:
            last = h[:, -1]
            buffer[self.start:self.start + last.shape[0]].copy_(last)

        return fn


@contextmanager
def _writing_hooks(model: nn.Module, writer: _RowWriter) -> Iterator[None]:
    handles = []
    try:
        for site in writer.buffers:
            handles.append(hook_site(model, site, writer.hook(site)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode without autograd for the block; the previous mode comes back, also on error."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _empty(model: nn.Module, names: Sequence[str], rows: int) -> dict[str, torch.Tensor]:
    return {site: torch.empty(rows, site_width(model, site)) for site in names}


def iter_feature_batches(model: nn.Module, tokenizer, prompts: Sequence[str], sites: SiteSpec,
                         batch_size: int = 128) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{site: [B, D]}`` per batch of prompts, in order, for streaming statistics.

    Each batch's tensors are new (the consumer may keep them); they are allocated before the
    batch's forward pass and filled in place by the hooks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    names = resolve_sites(model, sites)
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        writer = _RowWriter(_empty(model, names, len(chunk)))
        batch = generation.encode_prompts(tokenizer, chunk, device)
        with _eval_no_grad(model), _writing_hooks(model, writer):
            model(**forward_inputs(model, batch))
        yield writer.buffers


def collect_features(model: nn.Module, tokenizer, prompts: Sequence[str], sites: SiteSpec,
                     batch_size: int = 128) -> dict[str, torch.Tensor]:
    """``{site: [N, D]}`` float32 CPU activations at the last prompt token of every prompt.

    The results are allocated up front and written in place (see the module docstring), so the
    peak stays near the results plus one forward pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    names = resolve_sites(model, sites)
    device = next(model.parameters()).device
    writer = _RowWriter(_empty(model, names, len(prompts)))
    if not prompts:
        return writer.buffers
    with _eval_no_grad(model), _writing_hooks(model, writer):
        for start in range(0, len(prompts), batch_size):
            batch = generation.encode_prompts(tokenizer, prompts[start:start + batch_size],
                                              device)
            writer.start = start
            model(**forward_inputs(model, batch))
    return writer.buffers
