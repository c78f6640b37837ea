"""Named sites where neurons are read or written — a contract that tests assert.

- ``resid.L``: the residual stream after block L (1-based); ``resid.0`` is the embedding output.
  For L < n_layers it equals ``output_hidden_states[L]``. ``resid.<n_layers>`` is the last block's
  raw output, *before* the final norm (Hugging Face's last hidden state has the norm applied).
- ``mlp.L``: the MLP activation inside block L (1-based), i.e. the input of the MLP's down
  projection (GPT-2 ``c_proj``, Llama ``down_proj``): width 4*d for GPT-2, intermediate for Llama.

Works on GPT-2-, Llama-style models and on peft-wrapped ones. Hooks accept modules that return a
tensor or a tuple, and every public entry point hands back a handle to remove.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

SITE_KINDS = ("resid", "mlp")
_DOWN_PROJ_NAMES = ("c_proj", "down_proj", "fc2", "dense_4h_to_h")

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class Site:
    """A parsed site name."""

    name: str
    kind: str
    layer: int


def parse_site(name: str) -> Site:
    """``"resid.3"`` -> Site; anything else raises ValueError naming the site."""
    kind, _, layer = name.partition(".")
    if kind not in SITE_KINDS or not layer.isdigit():
        raise ValueError(f"site '{name}': expected 'resid.L' or 'mlp.L' with an integer L")
    return Site(name=name, kind=kind, layer=int(layer))


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _backbone(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """(module whose output is resid.0, the list of decoder blocks) for known layouts."""
    base = unwrap(model)
    transformer = getattr(base, "transformer", None)
    if transformer is not None and hasattr(transformer, "h"):  # GPT-2 family
        return getattr(transformer, "drop", transformer.wte), transformer.h
    inner = getattr(base, "model", None)
    if inner is not None and hasattr(inner, "layers") and hasattr(inner, "embed_tokens"):
        return inner.embed_tokens, inner.layers  # Llama, Mistral, Qwen, ...
    raise ValueError(f"unsupported architecture {type(base).__name__}: no GPT-2 or Llama layout")


def n_layers(model: nn.Module) -> int:
    """Number of decoder blocks."""
    return len(_backbone(model)[1])


def _down_proj(block: nn.Module) -> nn.Module:
    mlp = getattr(block, "mlp", None)
    for name in _DOWN_PROJ_NAMES:
        if mlp is not None and hasattr(mlp, name):
            return getattr(mlp, name)
    raise ValueError(f"block {type(block).__name__} has no MLP down projection")


def site_module(model: nn.Module, site: str) -> tuple[nn.Module, str]:
    """(module, "output" | "input"): where the site's activation is read or written."""
    parsed = parse_site(site)
    embed, blocks = _backbone(model)
    n = len(blocks)
    if parsed.kind == "resid":
        if not 0 <= parsed.layer <= n:
            raise ValueError(f"site '{site}': layer out of range (expected resid.0..resid.{n})")
        return (embed if parsed.layer == 0 else blocks[parsed.layer - 1]), "output"
    if not 1 <= parsed.layer <= n:
        raise ValueError(f"site '{site}': layer out of range (expected mlp.1..mlp.{n})")
    return _down_proj(blocks[parsed.layer - 1]), "input"


def site_width(model: nn.Module, site: str) -> int:
    """Number of neurons at a site."""
    module, where = site_module(model, site)
    if where == "output":
        config: Any = unwrap(model).config
        return int(config.hidden_size)
    layer: Any = module  # a Linear or transformers' Conv1D
    if hasattr(layer, "in_features"):
        return int(layer.in_features)
    return int(layer.weight.shape[0])  # transformers Conv1D stores (in, out)


def list_sites(model: nn.Module, kinds: tuple[str, ...] = SITE_KINDS) -> list[str]:
    """All site names of the model, resid first, in layer order."""
    n = n_layers(model)
    sites: list[str] = []
    if "resid" in kinds:
        sites += [f"resid.{i}" for i in range(n + 1)]
    if "mlp" in kinds:
        sites += [f"mlp.{i}" for i in range(1, n + 1)]
    return sites


def resolve_sites(model: nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Expand ``"resid"``, ``"mlp"``, ``"all"`` or explicit names; unknown ones fail by name."""
    names = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in names:
        if name == "all":
            out += list_sites(model)
        elif name in SITE_KINDS:
            out += list_sites(model, (name,))
        else:
            site_module(model, name)  # validates
            out.append(name)
    return list(dict.fromkeys(out))


def _replace_first(value, fn: SiteFn):
    """Apply fn to a tensor, or to the first element of a tuple/list; keep the container."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        new = fn(value[0])
        return None if new is None else type(value)((new, *value[1:]))
    raise TypeError(f"cannot hook a module output of type {type(value).__name__}")


def hook_site(model: nn.Module, site: str, fn: SiteFn) -> RemovableHandle:
    """Call ``fn(h)`` with the site's activation [batch, seq, width] on every forward pass.

    If ``fn`` returns a tensor it replaces the activation (steering); ``None`` leaves it
    (capture). The caller removes the returned handle (use a ``try/finally``).
    """
    module, where = site_module(model, site)
    if where == "output":
        return module.register_forward_hook(lambda _m, _args, out: _replace_first(out, fn))

    def pre_hook(_m, args):
        new = fn(args[0])
        return None if new is None else (new, *args[1:])

    return module.register_forward_pre_hook(pre_hook)
