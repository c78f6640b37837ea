"""One hook for every intervention kind and position mode (issue 26; STEERING.md).

An :class:`Intervention` says *what* happens to the selected coordinates of each site:

- ``add``/``add_scaled``: ``h_i += sign * alpha * shift_i`` (``shift`` = NMD, or sigma*sign(NMD));
- ``set_mean``: ``h_i += alpha * (target_i - h_i)`` with the target behaviour's mean (1 = the mean);
- ``interchange``: ``h_i = source_i``, the paired counterpart's value at the same relative prompt
  position (given per batch: :func:`with_sources`);
- ``ablate``: ``h_S -= alpha * (h_S . u) u`` with u the unit MEM-GEN direction of the site's
  selected coordinates (toward GEN only).

The position mode says *where*: ``last_prompt`` (the prefill's last position), ``every_pass``
(the last position of every forward pass: the paper), ``prompt`` (every real prompt position of
the prefill) and ``all`` (prompt and generated positions). Which pass is the prefill rests on the
model's own forward arguments (``hooks.is_prefill``). A teacher-forced pass (the margin) names
its prompt, last-prompt and answer positions itself through :func:`forced_layout`.

Hooks build new tensors and are always removed, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.sites import hook_site, site_width, unwrap
from memgen.analysis.steering.hooks import DIRECTIONS, _check_alpha_direction, is_prefill

KINDS = ("add", "add_scaled", "set_mean", "interchange", "ablate")
POSITIONS = ("last_prompt", "every_pass", "prompt", "all")
GEN_ONLY = ("ablate",)  # kinds that steer toward GEN only
NO_ALPHA = ("interchange", "ablate")  # alpha is fixed at 1 when tuning


def directions_of(kind: str) -> tuple[str, ...]:
    return ("to_gen",) if kind in GEN_ONLY else tuple(DIRECTIONS)


def check_positions(positions: str) -> str:
    if positions not in POSITIONS:
        raise ValueError(f"positions: expected one of {list(POSITIONS)}, got {positions!r}")
    return positions


def positions_of(positions: str | None, last_prompt_only: bool) -> str:
    """``positions`` if set, else the legacy ``last_prompt_only`` (True: last_prompt, False:
    every_pass, the two modes that flag named)."""
    if positions is None:
        return "last_prompt" if last_prompt_only else "every_pass"
    return check_positions(positions)


@dataclass
class Intervention:
    """What a kind does to ``selection``'s coordinates; per-neuron vectors are [K] float32.

    ``shift`` (add kinds, toward MEM), ``mem_value``/``gen_value`` (set_mean: the value set when
    steering to MEM / to GEN), ``direction`` (ablate: the MEM-GEN components; normalized per site
    in the hook), ``sources`` (interchange: item -> the item whose values are copied).
    """

    kind: str
    selection: NeuronSelection
    shift: torch.Tensor | None = None
    mem_value: torch.Tensor | None = None
    gen_value: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    sources: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {list(KINDS)}, got {self.kind!r}")
        need = {"add": ("shift",), "add_scaled": ("shift",), "set_mean": ("mem_value",
                                                                          "gen_value"),
                "ablate": ("direction",), "interchange": ()}[self.kind]
        for name in need:
            value = getattr(self, name)
            if value is None or value.numel() != len(self.selection):
                raise ValueError(f"{self.kind}: '{name}' needs {len(self.selection)} values")
            if not torch.isfinite(value).all():
                raise ValueError(f"{self.kind}: non-finite value in '{name}'")
        if len(self.selection) == 0:
            raise ValueError("selection: empty, nothing to steer (select at least one neuron)")
        if len(set(self.selection.keys())) != len(self.selection):
            raise ValueError("selection: duplicate (site, index) neurons")

    def site_groups(self) -> dict[str, torch.Tensor]:
        """site -> positions (in the selection) of its neurons."""
        out: dict[str, list[int]] = {}
        for j, site in enumerate(self.selection.sites):
            out.setdefault(site, []).append(j)
        return {site: torch.tensor(js, dtype=torch.long) for site, js in out.items()}


@dataclass
class _SiteOp:
    """The per-site operation, vectors already signed and scaled (float32, on CPU)."""

    site: str
    indices: torch.Tensor  # [k]
    add: torch.Tensor | None = None  # [k]
    target: torch.Tensor | None = None  # [k] set_mean
    unit: torch.Tensor | None = None  # [k] ablate
    alpha: float = 1.0


def present(value: torch.Tensor | None, name: str) -> torch.Tensor:
    """A kind's vector, which ``Intervention`` checked exists for that kind."""
    if value is None:
        raise ValueError(f"intervention: '{name}' is missing for this kind")
    return value


@dataclass
class PassState:
    """What the current forward pass is: the prefill, a decoding step or a teacher-forced pass."""

    prefill: bool = True
    attention: torch.Tensor | None = None
    forced: dict[str, torch.Tensor] | None = None  # prompt / last / answer masks [B, T]
    sources: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def position_mask(positions: str, state: PassState, h: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions of this pass that ``positions`` steers."""
    b, t = h.shape[:2]
    none = torch.zeros(b, t, dtype=torch.bool, device=h.device)
    if state.forced is not None:
        prompt, last, answer = (state.forced[k].to(h.device) for k in ("prompt", "last",
                                                                       "answer"))
    elif state.prefill:
        mask = state.attention
        prompt = (mask[:, -t:].bool().to(h.device) if isinstance(mask, torch.Tensor)
                  and mask.shape[0] == b and mask.shape[-1] >= t
                  else torch.ones(b, t, dtype=torch.bool, device=h.device))
        last = none.clone()
        last[:, -1] = True
        answer = none
    else:
        prompt, last, answer = none, none, torch.ones(b, t, dtype=torch.bool, device=h.device)
    if positions == "last_prompt":
        return last
    if positions == "every_pass":
        return last | answer
    if positions == "prompt":
        return prompt
    return prompt | answer


def plan(model: nn.Module, intervention: Intervention, alpha: float, direction: str
         ) -> dict[str, _SiteOp]:
    """Validate and build each site's operation for one direction."""
    alpha = _check_alpha_direction(alpha, direction)
    kind = intervention.kind
    if kind in GEN_ONLY and direction != "to_gen":
        raise ValueError(f"direction: '{kind}' steers toward GEN only, got {direction!r}")
    sel = intervention.selection
    indices = sel.indices.detach().reshape(-1).long().cpu()
    ops = {}
    for site, js in intervention.site_groups().items():
        try:
            width = site_width(model, site)
        except ValueError as err:
            raise ValueError(f"selection: {err}") from None
        idx = indices[js]
        if idx.min() < 0 or idx.max() >= width:
            raise ValueError(f"selection: index out of range for site '{site}' (width {width})")
        op = _SiteOp(site, idx, alpha=alpha)
        if kind in ("add", "add_scaled"):
            shift = present(intervention.shift, "shift")
            op.add = DIRECTIONS[direction] * alpha * shift.float().cpu()[js]
        elif kind == "set_mean":
            value = present(intervention.mem_value if direction == "to_mem"
                            else intervention.gen_value, "mem_value/gen_value")
            op.target = value.float().cpu()[js]
        elif kind == "ablate":
            u = present(intervention.direction, "direction").float().cpu()[js]
            norm = u.norm()
            op.unit = u / norm if norm > 0 else u
        ops[site] = op
    return ops


def apply_op(op: _SiteOp, kind: str, sub: torch.Tensor, source: torch.Tensor | None
             ) -> torch.Tensor:
    """The new values of the selected coordinates ``sub`` [B, T, k] (float32)."""
    if kind in ("add", "add_scaled"):
        return sub + present(op.add, "add").to(sub.device)
    if kind == "set_mean":
        return sub + op.alpha * (present(op.target, "target").to(sub.device) - sub)
    if kind == "ablate":
        u = present(op.unit, "unit").to(sub.device)
        return sub - op.alpha * (sub @ u).unsqueeze(-1) * u
    if source is None:
        return sub
    return source.to(sub.device, sub.dtype)


def _site_hook(op: _SiteOp, kind: str, positions: str, state: PassState):
    def fn(h: torch.Tensor) -> torch.Tensor | None:
        mask = position_mask(positions, state, h)
        source = None
        if kind == "interchange":
            found = state.sources.get(op.site)
            if found is None or not (state.prefill or state.forced is not None):
                return None  # generated positions have no counterpart
            source, has = found
            if h.shape[0] != source.shape[0] and h.shape[0] % source.shape[0] == 0:
                beams = h.shape[0] // source.shape[0]  # beam search expands each row
                source, has = (source.repeat_interleave(beams, 0),
                               has.repeat_interleave(beams, 0))
            if source.shape[:2] != h.shape[:2]:
                raise ValueError(f"interchange: sources of shape {tuple(source.shape[:2])} for "
                                 f"a pass of shape {tuple(h.shape[:2])} at '{op.site}'")
            mask = mask & has.to(h.device)
        if not bool(mask.any()):
            return None
        idx = op.indices.to(h.device)
        sub = h.index_select(-1, idx).float()
        new = apply_op(op, kind, sub, source)
        out = h.clone()
        out[..., idx] = torch.where(mask.unsqueeze(-1), new, sub).to(h.dtype)
        return out

    return fn


@contextmanager
def intervene(model: nn.Module, intervention: Intervention, alpha: float, direction: str,
              positions: str = "last_prompt") -> Iterator[PassState]:
    """Within the block every forward pass of ``model`` is intervened on at ``positions``.

    Yields the pass state: interchange sources go in ``state.sources`` (:func:`with_sources`),
    a teacher-forced layout in ``state.forced`` (:func:`forced_layout`).
    """
    check_positions(positions)
    ops = plan(model, intervention, alpha, direction)
    state = PassState()
    handles: list[RemovableHandle] = []

    def track(_module, args, kwargs):
        state.prefill = is_prefill(args, kwargs)
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        state.attention = mask

    try:
        for module in dict.fromkeys((model, unwrap(model))):
            handles.append(module.register_forward_pre_hook(track, with_kwargs=True))
        for site, op in ops.items():
            handles.append(hook_site(model, site, _site_hook(op, intervention.kind, positions,
                                                             state)))
        yield state
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def forced_layout(state: PassState, prompt: torch.Tensor, last: torch.Tensor,
                  answer: torch.Tensor) -> Iterator[None]:
    """A teacher-forced pass: its prompt, last-prompt and answer positions ([B, T] bool)."""
    state.forced = {"prompt": prompt, "last": last, "answer": answer}
    try:
        yield
    finally:
        state.forced = None


def align_sources(target_prompt: torch.Tensor, source_values: torch.Tensor,
                  source_prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Source values placed at the target's positions: [B, T, k] values and [B, T] mask.

    A row whose prompts have the same length maps every prompt position to the same relative
    position; rows of different lengths map the last prompt token only.
    """
    b, t = target_prompt.shape
    out = torch.zeros(b, t, source_values.shape[-1], dtype=source_values.dtype)
    has = torch.zeros(b, t, dtype=torch.bool)
    for row in range(b):
        tgt = target_prompt[row].nonzero().flatten()
        src = source_prompt[row].nonzero().flatten()
        if len(tgt) == 0 or len(src) == 0:
            continue
        if len(tgt) != len(src):
            tgt, src = tgt[-1:], src[-1:]
        out[row, tgt] = source_values[row, src.to(source_values.device)].cpu()
        has[row, tgt] = True
    return out, has
