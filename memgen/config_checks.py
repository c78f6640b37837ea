"""Schema-driven checks: closed configs, protected sections, numeric ranges, override syntax.

Driven by the dataclasses of :mod:`memgen.config` (their fields, types and ``metadata``), so a key
added to the schema is checked without new code here:

- a key the schema lacks is refused, also when added with ``+key=`` (the nearest known key is
  named), except inside free mappings (``task.params``, ``sweep.space``);
- ``~key`` may not remove a schema key: the run would silently fall back to code defaults;
- every int and float key has a range: ``metadata={"range": (low, high)}`` (see :func:`ranged`),
  by default ``>= 0``; lists of numbers are checked element by element.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
import unicodedata
from dataclasses import field
from typing import Any

from omegaconf import DictConfig, ListConfig

DEFAULT_RANGE = (0, None)  # numeric keys are counts, sizes, rates or seconds unless declared


def ranged(default: Any = dataclasses.MISSING, low: float | None = 0, high: float | None = None,
           **kwargs: Any) -> Any:
    """A schema field with its accepted range (inclusive; None = unbounded)."""
    return field(default=default, metadata={"range": (low, high)}, **kwargs)


def _error(message: str) -> Exception:
    from memgen.config import ConfigError  # noqa: PLC0415 - config imports this module

    return ConfigError(message)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _section(hint: Any) -> type | None:
    hint = _strip_optional(hint)
    return hint if dataclasses.is_dataclass(hint) else None


def _number_kind(hint: Any) -> type | None:
    """int or float for a numeric field (or a list of them), else None."""
    hint = _strip_optional(hint)
    if typing.get_origin(hint) is list:
        (hint,) = typing.get_args(hint) or (None,)
    return hint if hint in (int, float) else None


@functools.cache
def known_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """Every dotted key of the schema, sections included."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        out.append(key)
        sub = _section(_hints(cls)[f.name])
        if sub is not None:
            out.extend(known_keys(sub, key + "."))
    return tuple(out)


def nearest(key: str, root: type, siblings: list[str] | None = None) -> str:
    """``; did you mean X?`` for the closest known key (difflib), else an empty string."""
    parent, _, leaf = key.rpartition(".")
    ancestors = {key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1)}
    pool = [k for k in known_keys(root) if k not in ancestors]
    if siblings is None:
        siblings = [k.rpartition(".")[2] for k in pool if k.rpartition(".")[0] == parent]
    hit = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.7)
    guess = [f"{parent}.{hit[0]}" if parent else hit[0]] if hit else []
    if not guess:  # the same leaf name in another section (trainer.top_k -> analysis.top_k)
        guess = [k for k in pool if k.rpartition(".")[2] == leaf][:1]
    if not guess:
        guess = difflib.get_close_matches(key, pool, n=1, cutoff=0.75)
    return f"; did you mean {guess[0]}?" if guess else ""


def check_closed(cfg: DictConfig, cls: type, prefix: str = "", root: type | None = None) -> None:
    """No key outside the schema, however it got in (``+key=``, a yaml file)."""
    root = root or cls
    names = [f.name for f in dataclasses.fields(cls)]
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in names:
            raise _error(f"{shown(path)}: not a config key{nearest(str(path), root, names)}; "
                         f"expected one of the keys of {prefix.rstrip('.') or 'the root'} "
                         f"(+ cannot add keys to memgen's schema)")
        sub = _section(_hints(cls)[key])
        value = cfg._get_node(key)
        if sub is not None and isinstance(value, DictConfig) and not value._is_none():
            check_closed(value, sub, path + ".", root)


def check_deletions(overrides: list[str], root: type) -> None:
    """``~key`` may not remove a schema key (or section): the run needs it, and without it the
    code defaults (which differ from ``conf/``) would silently apply."""
    for item in overrides:
        if not item.startswith("~"):
            continue
        key = item[1:].partition("=")[0].strip()
        parts = key.split(".")
        cls: type | None = root
        for part in parts:
            if cls is None or part not in {f.name for f in dataclasses.fields(cls)}:
                break  # an optional group, below a free mapping (task.params.x), or unknown
            cls = _section(_hints(cls)[part])
        else:
            raise _error(f"{key}: cannot be removed (~{key}), the run needs it; expected "
                         f"{key}=<value> to change it (null where the key is optional)")


def check_ranges(cfg: DictConfig, cls: type, prefix: str = "") -> None:
    """Every numeric key within its schema range (``metadata["range"]``, default >= 0)."""
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        value = cfg.get(f.name)
        sub = _section(hint)
        if sub is not None:
            if isinstance(value, DictConfig):
                check_ranges(value, sub, key + ".")
            continue
        kind = _number_kind(hint)
        if kind is None or value is None:
            continue
        low, high = f.metadata.get("range", DEFAULT_RANGE)
        for item in (value if isinstance(value, ListConfig | list) else [value]):
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            ok = math.isfinite(item) and (low is None or item >= low) and \
                (high is None or item <= high)
            if not ok:
                raise _error(f"{key}: expected {expected_range(kind, low, high)}, got {item!r}")


def expected_range(kind: type, low: float | None, high: float | None) -> str:
    noun = "an integer" if kind is int else "a finite number"
    if low is not None and high is not None:
        return f"{noun} in [{low}, {high}]"
    if low is not None:
        return f"{noun} >= {low}"
    if high is not None:
        return f"{noun} <= {high}"
    return noun


BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def schema_hint(key: str, root: type) -> Any:
    """The type of a dotted schema key, or None when it is not one (or is below a mapping)."""
    cls: Any = root
    hint = None
    for part in key.split("."):
        if cls is None or not dataclasses.is_dataclass(cls) or \
                part not in {f.name for f in dataclasses.fields(cls)}:
            return None
        hint = _hints(cls)[part]
        cls = _section(hint)
    return hint


def check_bool_values(overrides: list[str], root: type) -> None:
    """A bool key takes true/false (or yes/no, on/off, 1/0): OmegaConf turned 2 into True."""
    for item in overrides:
        key, eq, value = item.partition("=")
        key = key.lstrip("+~")
        if not eq or _strip_optional(schema_hint(key, root)) is not bool:
            continue
        word = value.strip().strip("'\"").lower()
        if word not in BOOL_WORDS and not (word == "null" and schema_hint(key, root) is not bool):
            raise _error(f"{key}: expected true or false, got {value!r}")


INVISIBLE = ("Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs")


def check_key_characters(overrides: list[str]) -> None:
    """A key with an invisible or non-ASCII character (a zero-width space pasted from a web
    page) is shown with repr(), so the user can see what is wrong."""
    for item in overrides:
        key = item.partition("=")[0].lstrip("+~")
        for i, ch in enumerate(key):
            if unicodedata.category(ch) in INVISIBLE or not ch.isascii():
                raise _error(f"{shown(key)}: the override key has the character {ch!r} "
                             f"(U+{ord(ch):04X}, {unicodedata.name(ch, 'unnamed')}) at position "
                             f"{i}; expected a key of ASCII letters, digits, '_' and '.'")


def shown(key: str) -> str:
    """A key as the user can read it: repr() when it holds an invisible or non-ASCII char."""
    return repr(key) if any(not ch.isascii() or not ch.isprintable() for ch in key) else key


def estimated_parameters(n_layer: int, n_embd: int, n_positions: int, vocab: int,
                         intermediate: int = 0) -> int:
    """A transformer's parameter count, roughly (attention 4d^2, MLP 2*d*ff per layer)."""
    ff = intermediate or 4 * n_embd
    return n_layer * (4 * n_embd * n_embd + 2 * n_embd * ff) + (vocab + n_positions) * n_embd


def check_model_memory(cfg: DictConfig, vocab: int) -> None:
    """Sizes whose model would not fit in this machine's memory (weights, gradients and Adam's
    two moments: 16 bytes a parameter) fail here, not in an allocator's error or the OOM
    killer."""
    import os  # noqa: PLC0415

    m = cfg.model
    params = estimated_parameters(m.n_layer, m.n_embd, m.n_positions, vocab,
                                  m.get("intermediate_size", 0) or 0)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return
    if params * 16 > memory:
        raise _error(f"model: n_layer={m.n_layer}, n_embd={m.n_embd}, n_positions="
                     f"{m.n_positions} make about {params:.2e} parameters, "
                     f"{params * 16 / 2**30:.0f} GiB to train; expected sizes that fit in this "
                     f"machine's {memory / 2**30:.0f} GiB")
