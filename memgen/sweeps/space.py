"""The search space of a sweep: ``sweep.space`` parsed, checked against the config, sampled.

Entries are written nested (``analysis: {steering: {alpha: {type: float, ...}}}``) so that the
command line can reach them (``sweep.space.analysis.steering.alpha.high=8``); dotted keys
(``analysis.steering.alpha: {...}``) work too. A node with a ``type`` field is one parameter.
Every check raises :class:`ConfigError` with one line, before a model is loaded or trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from memgen.config import plain, to_schema
from memgen.errors import ConfigError

TYPES = ("int", "float", "categorical")
FIELDS = {"type", "low", "high", "log", "step", "choices"}
# A steering sweep reuses one model's labels, activations and neuron statistics for every
# trial, so only the keys read after those stages may vary.
STEERING_PREFIX = "analysis.steering."
FORBIDDEN_PREFIXES = ("sweep.", "tracking.")
# Keys that select neurons in two ways: a trial that sets one clears the other.
EXCLUSIVE = (("analysis.steering.top_k", "analysis.steering.top_fraction"),
             ("analysis.top_k", "analysis.top_fraction"))
_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One searched config key: an int or float range (optionally log-scaled) or choices."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """The trial's value; Optuna stores it under the config key itself."""
        if self.type == "int":
            low, high = self._bounds()
            return trial.suggest_int(self.key, int(low), int(high), log=self.log,
                                     step=int(self.step or 1))
        if self.type == "float":
            low, high = self._bounds()
            return trial.suggest_float(self.key, float(low), float(high), log=self.log,
                                       step=self.step)
        return trial.suggest_categorical(self.key, list(self.choices))

    def extremes(self) -> list[Any]:
        """Values checked against the config before any work: both ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(bound) for bound in self._bounds()]

    def _bounds(self) -> tuple[float, float]:
        """``low`` and ``high`` of a number: :func:`_param` requires both."""
        assert self.low is not None and self.high is not None
        return self.low, self.high


def _leaves(node: Mapping, prefix: str = "") -> list[tuple[str, Mapping]]:
    out = []
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(value, Mapping):
            raise ConfigError(f"sweep.space.{path}: expected a mapping like {{type: float, "
                              f"low: 0.1, high: 1.0}}, got {value!r}")
        out += [(path, value)] if "type" in value else _leaves(value, path)
    return out


def _number(value: Any, key: str, name: str, integer: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and value != int(value)):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"sweep.space.{key}.{name}: expected {kind}, got {value!r}")
    return value


def _param(key: str, spec: Mapping) -> Param:
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise ConfigError(f"sweep.space.{key}: unknown field {unknown[0]!r} "
                          f"(expected fields from {sorted(FIELDS)})")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"sweep.space.{key}.type: expected one of {list(TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not choices or isinstance(choices, (str, Mapping)):
            raise ConfigError(f"sweep.space.{key}.choices: expected a non-empty list, "
                              f"got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise ConfigError(f"sweep.space.{key}.choices: expected scalars (Optuna stores "
                                  f"them), got {choice!r}")
        if {"low", "high", "log", "step"} & set(spec):
            raise ConfigError(f"sweep.space.{key}: a categorical takes 'choices', "
                              f"not low/high/log/step")
        return Param(key, kind, choices=tuple(choices))
    if spec.get("choices") is not None:
        raise ConfigError(f"sweep.space.{key}: 'choices' needs type: categorical")
    integer = kind == "int"
    low = _number(spec.get("low"), key, "low", integer)
    high = _number(spec.get("high"), key, "high", integer)
    if not low < high:
        raise ConfigError(f"sweep.space.{key}: empty or inverted range, expected low < high, "
                          f"got low={low!r}, high={high!r}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"sweep.space.{key}: log: true needs low > 0, got low={low!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, key, "step", integer)
        if step <= 0 or log:
            raise ConfigError(f"sweep.space.{key}.step: expected a positive step without "
                              f"log: true, got {step!r}")
    return Param(key, kind, low, high, log, step)


def parse_space(space: DictConfig | Mapping) -> list[Param]:
    """``sweep.space`` as a list of :class:`Param`, in the order written."""
    node: Mapping = plain(space) if isinstance(space, DictConfig) else space
    if not node:
        raise ConfigError("sweep.space: empty; give at least one key, e.g. "
                          "sweep.space.analysis.steering.alpha={type:float,low:1,high:8}")
    return [_param(key, spec) for key, spec in _leaves(node)]


def check_space(params: list[Param], base: DictConfig, kind: str) -> None:
    """Every key exists in the config, may vary in this sweep kind, and accepts its extremes."""
    for p in params:
        if p.key.startswith(FORBIDDEN_PREFIXES):
            raise ConfigError(f"sweep.space.{p.key}: the sweep's own and the tracking settings "
                              f"cannot be searched")
        found = OmegaConf.select(base, p.key, default=_MISSING)
        if found is _MISSING:
            raise ConfigError(f"sweep.space.{p.key}: not a config key")
        if isinstance(found, DictConfig) or OmegaConf.is_list(found):
            raise ConfigError(f"sweep.space.{p.key}: a config section or list, not a single "
                              f"value")
        if kind == "steering" and not p.key.startswith(STEERING_PREFIX):
            raise ConfigError(f"sweep.space.{p.key}: a steering sweep reuses one trained model "
                              f"and its neuron statistics, so it can only vary "
                              f"{STEERING_PREFIX}*; use sweep=training to retrain")
        for value in p.extremes():
            try:
                trial_config(base, {p.key: value})
            except ConfigError as exc:
                raise ConfigError(f"sweep.space.{p.key}: {value!r} is not a valid value ({exc})"
                                  ) from None


def trial_config(base: DictConfig, params: Mapping[str, Any]) -> DictConfig:
    """The base config with a trial's values, validated like any composed config."""
    data = OmegaConf.create(plain(base))
    for key, value in params.items():
        OmegaConf.update(data, key, value, merge=False)
    for one, other in EXCLUSIVE:  # top_k and top_fraction are alternatives: keep the trial's
        if one in params and other not in params:
            OmegaConf.update(data, other, None, merge=False)
        elif other in params and one not in params:
            OmegaConf.update(data, one, None, merge=False)
    return to_schema(data)
