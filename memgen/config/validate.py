"""Value checks: the schema-driven ones (closed configs, protected sections, numeric ranges,
override syntax) and the cross-key ones of :func:`validate`.

The schema-driven checks read the dataclasses of :mod:`memgen.config.schema` (their fields, types
and ``metadata``), so a key added to the schema is checked without new code here:

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
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from memgen.analysis.settings import RANKS
from memgen.config.schema import (
    CHECKPOINT_METRICS,
    DEFAULT_RANGE,
    MAX_EXAMPLES,
    NEEDS_VARIANTS,
    SteeringConfig,
    plain,
)
from memgen.errors import ConfigError
from memgen.runtime.boundary import task_error
from memgen.tasks.registry import TASKS, build_params

DEFAULT_STEERING_SITES = SteeringConfig.sites  # the schema's default, "mlp"


def _error(message: str) -> Exception:
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
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


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
        path = prefix + str(key)
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
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls) or \
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


def override_key(item: str) -> str:
    """The config key an override sets, appends (``+``) or deletes (``~``)."""
    return item.partition("=")[0].lstrip("+~")


def check_key_characters(overrides: list[str]) -> None:
    """A key with an invisible or non-ASCII character (a zero-width space pasted from a web
    page) is shown with repr(), so the user can see what is wrong."""
    for item in overrides:
        key = override_key(item)
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


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _check_finite(node: Any, prefix: str = "") -> None:
    """Every float in the config is finite: ``trainer.weight_decay=nan`` trained NaNs."""
    if isinstance(node, DictConfig):
        for key in node:
            _check_finite(node[key], f"{prefix}.{key!s}" if prefix else str(key))
    elif OmegaConf.is_list(node):
        for value in node:
            _check_finite(value, prefix)
    elif isinstance(node, float):
        _require(math.isfinite(node), prefix, "a finite number", node)


def _validate_kinds(s) -> None:
    """issue 26's kind / positions / candidate lists."""
    kinds = ["add", "add_scaled", "set_mean", "interchange", "ablate"]
    positions = ["last_prompt", "every_pass", "prompt", "all"]
    for name in [s.kind, *s.tune_kinds]:
        _require(name in kinds, "analysis.steering.kind" if name == s.kind and name not in
                 s.tune_kinds else "analysis.steering.tune_kinds", f"names from {kinds}", name)
    for name in ([s.positions] if s.positions is not None else []) + list(s.tune_positions):
        _require(name in positions, "analysis.steering.positions", f"names from {positions}",
                 name)
    _require(s.tune_keep >= 1, "analysis.steering.tune_keep", "an integer >= 1", s.tune_keep)
    _require(s.rank in RANKS, "analysis.steering.rank", f"one of {list(RANKS)}", s.rank)


def validate(cfg: DictConfig) -> None:
    """Value checks that types cannot express; the first failure raises ConfigError."""
    t, m, tr, a = cfg.task, cfg.model, cfg.trainer, cfg.analysis
    _check_finite(cfg)
    for key, value in (("seed", cfg.seed), ("sweep.sampler_seed", cfg.sweep.sampler_seed)):
        _require(0 <= value <= SEED_MAX, key, f"an integer in [0, {SEED_MAX}]", value)
    _require(cfg.resume is None or bool(str(cfg.resume).strip()), "resume",
             "a run id (omit resume= for a new run)", cfg.resume)
    _require(bool(cfg.tracking.experiment.strip()), "tracking.experiment",
             "a non-empty experiment name", cfg.tracking.experiment)
    _require(tr.weight_decay >= 0, "trainer.weight_decay", "a finite number >= 0",
             tr.weight_decay)
    _require(tr.gradient_clip_val >= 0, "trainer.gradient_clip_val", "a finite number >= 0",
             tr.gradient_clip_val)
    _require(t.name in TASKS, "task.name", f"one of {sorted(TASKS)}", t.name)
    _validate_n_train(t.n_train, t.name)
    for key in ("n_conflict", "n_val_conflict", "n_clean", "max_new_tokens"):
        _require(t[key] > 0, f"task.{key}", "a positive integer", t[key])
    _require(t.n_perturbations >= 2, "task.n_perturbations", "an integer >= 2", t.n_perturbations)
    _require(0 < t.mem_ratio < 1, "task.mem_ratio", "a fraction in (0, 1)", t.mem_ratio)
    if t.name in TASKS:
        try:
            build_params(t.name, plain(t.params, resolve=False)).validate()
        except Exception as exc:  # noqa: BLE001 - a user's rule file is imported here
            raise ConfigError(task_error(cfg, exc)) from None
    _require(m.kind in ("scratch", "lora"), "model.kind", "'scratch' or 'lora'", m.kind)
    _require(m.arch in ("gpt2", "llama"), "model.arch", "'gpt2' or 'llama'", m.arch)
    for key in ("n_layer", "n_embd", "n_head", "n_positions"):
        _require(m[key] > 0, f"model.{key}", "a positive integer", m[key])
    _require(m.n_embd % m.n_head == 0, "model.n_embd", f"a multiple of model.n_head={m.n_head}",
             m.n_embd)
    _require(0 <= m.dropout < 1, "model.dropout", "a fraction in [0, 1)", m.dropout)
    if m.kind == "lora":
        _require(bool(m.name_or_path), "model.name_or_path", "a hub id or local directory",
                 m.name_or_path)
        _require(m.lora.r > 0, "model.lora.r", "a positive integer", m.lora.r)
    for key in ("max_epochs", "batch_size", "accumulate_grad_batches", "check_val_every_n_epoch"):
        _require(tr[key] > 0, f"trainer.{key}", "a positive integer", tr[key])
    _require(tr.lr > 0 and math.isfinite(tr.lr), "trainer.lr", "a positive finite number", tr.lr)
    _require(tr.warmup_steps >= 0, "trainer.warmup_steps", "an integer >= 0", tr.warmup_steps)
    _require(tr.loss_on in ("sequence", "answer"), "trainer.loss_on", "'sequence' or 'answer'",
             tr.loss_on)
    _require(tr.checkpoint_metric in CHECKPOINT_METRICS, "trainer.checkpoint_metric",
             f"one of {list(CHECKPOINT_METRICS)}", tr.checkpoint_metric)
    _require(t.n_val_perturbations >= 1, "task.n_val_perturbations", "an integer >= 1",
             t.n_val_perturbations)
    if tr.checkpoint_metric in NEEDS_VARIANTS:
        _require(t.n_val_perturbations >= 2, "task.n_val_perturbations",
                 f"an integer >= 2 with trainer.checkpoint_metric={tr.checkpoint_metric}",
                 t.n_val_perturbations)
    _require(a.decoding.num_beams >= 1, "analysis.decoding.num_beams", "an integer >= 1",
             a.decoding.num_beams)
    _require(0 < tr.limit_train_batches <= 1, "trainer.limit_train_batches", "a fraction in (0, 1]",
             tr.limit_train_batches)
    _validate_selection(a.top_k, a.top_fraction, "analysis")
    validate_replicate(cfg)
    s = a.steering
    _validate_selection(s.top_k, s.top_fraction, "analysis.steering", allow_none=True)
    _require(math.isfinite(s.alpha) and s.alpha >= 0, "analysis.steering.alpha",
             "a finite number >= 0", s.alpha)
    for value in s.grid_alpha:
        _require(math.isfinite(value) and value >= 0, "analysis.steering.grid_alpha",
                 "finite numbers >= 0", value)
    for value in s.grid_top_fraction:
        _require(0 < value <= 1, "analysis.steering.grid_top_fraction", "fractions in (0, 1]",
                 value)
    _require(len(s.tune_alpha) > 0 and all(math.isfinite(v) and v >= 0 for v in s.tune_alpha),
             "analysis.steering.tune_alpha", "a non-empty list of finite numbers >= 0",
             list(s.tune_alpha))
    for key in ("tune_max_control", "tune_max_clean_drop"):
        _require(s[key] is None or 0 <= s[key] <= 1, f"analysis.steering.{key}",
                 "a fraction in [0, 1] or null", s[key])
    _require(s.tune_max_items is None or (isinstance(s.tune_max_items, int)
                                          and s.tune_max_items >= 1),
             "analysis.steering.tune_max_items", "an integer >= 1 or null", s.tune_max_items)
    _require(len(s.tune_top_fraction) > 0 and all(0 < v <= 1 for v in s.tune_top_fraction),
             "analysis.steering.tune_top_fraction", "a non-empty list of fractions in (0, 1]",
             list(s.tune_top_fraction))
    for name in s.controls:
        _require(name in ("random", "low_r", "shuffled"), "analysis.steering.controls",
                 "names from ['low_r', 'random', 'shuffled']", name)
    _validate_kinds(s)
    # tune_sites names the candidates `memgen run` picks among, so a `sites` of one's own would
    # be silently ignored (a steering sweep steers `sites` itself: tune_sites does not apply)
    _require(not s.tune_sites or s.sites == DEFAULT_STEERING_SITES
             or (cfg.sweep.name != "none" and cfg.sweep.kind == "steering"),
             "analysis.steering.sites",
             f"the default '{DEFAULT_STEERING_SITES}' while analysis.steering.tune_sites="
             f"{list(s.tune_sites)} picks the sites per direction (to steer these sites alone "
             f"add analysis.steering.tune_sites=[])", s.sites)
    _require(0 < a.selection_fraction < 1, "analysis.selection_fraction", "a fraction in (0, 1)",
             a.selection_fraction)
    _require(len(set(a.consistency_seeds)) == len(a.consistency_seeds)
             and all(0 <= seed <= SEED_MAX for seed in a.consistency_seeds),
             "analysis.consistency_seeds",
             "distinct integers >= 0", list(a.consistency_seeds))
    _require(a.n_shuffles >= 0, "analysis.n_shuffles", "an integer >= 0", a.n_shuffles)
    _require(a.batch_size > 0, "analysis.batch_size", "a positive integer", a.batch_size)
    _require(a.every_n_val_epochs >= 0, "analysis.every_n_val_epochs", "an integer >= 0",
             a.every_n_val_epochs)
    for stage in a.callback_stages:
        _require(stage in ("neurons", "probes", "steering"), "analysis.callback_stages",
                 "names from ['neurons', 'probes', 'steering']", stage)
    _require(len(a.sites) > 0, "analysis.sites", "a non-empty list of sites, e.g. [resid]",
             list(a.sites))
    for site in a.sites:
        kind, _, layer = site.partition(".")
        _require(site in ("all", "resid", "mlp") or (kind in ("resid", "mlp") and layer.isdigit()),
                 "analysis.sites", "'resid', 'mlp', 'all' or names like 'resid.3'", site)


def validate_replicate(cfg: DictConfig) -> None:
    """``replicate.*`` and ``claims.*``; unknown claim keys already fail in the schema merge."""
    r, c = cfg.replicate, cfg.claims
    seeds = list(r.seeds)
    _require(len(seeds) > 0, "replicate.seeds", "a non-empty list of seeds", seeds)
    _require(len(set(seeds)) == len(seeds), "replicate.seeds", "distinct seeds", seeds)
    _require(all(0 <= seed <= SEED_MAX for seed in seeds), "replicate.seeds",
             f"integers in [0, {SEED_MAX}]", seeds)
    _require(r.workers >= 1, "replicate.workers", "an integer >= 1", r.workers)
    for key in ("min_behavior_rate", "max_clean_drop", "max_p_value"):
        _require(0 <= c[key] <= 1, f"claims.{key}", "a fraction in [0, 1]", c[key])
    for key in ("min_r_margin", "min_probe_margin", "min_steer_margin", "min_transfer_margin"):
        _require(math.isfinite(c[key]) and -1 <= c[key] <= 1, f"claims.{key}",
                 "a finite margin in [-1, 1]", c[key])
    _require(c.min_pairs >= 0, "claims.min_pairs", "an integer >= 0", c.min_pairs)


def _validate_n_train(value: Any, task: str) -> None:
    """A positive integer, or ``all`` for ``task=files`` (the file as written)."""
    if value == "all":
        _require(task == "files", "task.n_train", "a positive integer ('all' is for task=files)",
                 value)
        return
    _require(isinstance(value, int) and not isinstance(value, bool)
             and 0 < value <= MAX_EXAMPLES,
             "task.n_train", f"a positive integer <= {MAX_EXAMPLES} or 'all'", value)


def _validate_selection(top_k: int | None, top_fraction: float | None, prefix: str,
                        allow_none: bool = False) -> None:
    if top_k is not None:
        _require(top_k > 0, f"{prefix}.top_k", "a positive integer", top_k)
    if top_fraction is not None:
        _require(0 < top_fraction <= 1, f"{prefix}.top_fraction", "a fraction in (0, 1]",
                 top_fraction)
    if not allow_none:
        _require(top_k is not None or top_fraction is not None, f"{prefix}.top_k",
                 "top_k or top_fraction to be set", None)
