"""Composition: ``conf/`` plus overrides through Hydra, merged onto the schema and validated.

Every check runs before any work starts and raises :class:`ConfigError` with one line that names
the key and what was expected; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from memgen.config.schema import Config, plain
from memgen.config.validate import (
    check_bool_values,
    check_closed,
    check_deletions,
    check_key_characters,
    check_ranges,
    nearest,
    override_key,
    validate,
)
from memgen.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """The config tree: ``$MEMGEN_CONF_DIR`` or the project's ``conf/``."""
    return Path(os.environ.get("MEMGEN_CONF_DIR", PROJECT_ROOT / "conf")).resolve()


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an error's message (its type name when it has none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _one_line(exc: BaseException) -> str:
    """Hydra spreads its message over lines (the key, then the reason or the options): join."""
    text = str(exc)
    if exc.__cause__ is not None:  # Hydra wraps the schema's verdict ("could not be converted")
        text += "\n" + str(exc.__cause__)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cut = ("full_key:", "object_type", "reference_type", "Set the", "Config search path",
           "provider=", "See https")
    lines = [ln for ln in lines if not ln.startswith(cut)]
    hint = "(not a config key; to add one use"
    text = " ".join(lines).replace("To append to your config use", hint)
    if "(not a config key" in text:
        text += ")"
    return text[:300] or type(exc).__name__


def check_overrides(overrides: list[str]) -> None:
    """What Hydra lets through or words vaguely: ``=3`` (no key) and an unknown
    ``experiment=`` (an optional group: a typo silently ran the full default)."""
    check_key_characters(overrides)
    check_deletions(overrides, Config)
    check_bool_values(overrides, Config)
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq and not key.strip().lstrip("+~"):
            raise ConfigError(f"config: override {item!r} has no key before '='; "
                              f"expected key=value, e.g. trainer.max_epochs=3")
        if key.lstrip("+~") == "experiment" and eq and value not in ("", "null"):
            folder = conf_dir() / "experiment"
            choices = sorted(p.stem for p in folder.glob("*.yaml"))
            if value not in choices:
                raise ConfigError(f"experiment: no experiment {value!r} in {folder}; "
                                  f"choose one of {choices}")


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` with Hydra overrides, merge onto the schema and validate."""
    # Hydra only when composing: reading a stored config (to_schema) needs omegaconf alone
    from hydra import compose as hydra_compose  # noqa: PLC0415
    from hydra import initialize_config_dir  # noqa: PLC0415
    from hydra.core.config_store import ConfigStore  # noqa: PLC0415
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415
    from hydra.errors import HydraException  # noqa: PLC0415

    check_overrides(list(overrides or []))
    check_conf_dir(config_name)
    ConfigStore.instance().store(name="memgen_schema", node=Config)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            raw = hydra_compose(config_name=config_name, overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_hydra_message(exc, list(overrides or []))) from None
    finally:
        GlobalHydra.instance().clear()
    return to_schema(raw)


def check_conf_dir(config_name: str) -> None:
    """A missing or empty config folder is named (Hydra's message names neither)."""
    folder = conf_dir()
    source = "MEMGEN_CONF_DIR" if os.environ.get("MEMGEN_CONF_DIR") else "conf"
    if not folder.is_dir():
        raise ConfigError(f"{source}: config folder {folder} does not exist; expected a folder "
                          f"with {config_name}.yaml (unset MEMGEN_CONF_DIR for memgen's conf/)")
    if not (folder / f"{config_name}.yaml").is_file():
        raise ConfigError(f"{source}: config folder {folder} has no {config_name}.yaml; "
                          f"expected memgen's config tree (copy conf/ from the project)")


def _hydra_message(exc: BaseException, overrides: list[str]) -> str:
    """Hydra's error as ``<key>: <what>; <expected>``: the override that does not parse (not
    the lexer's words alone), or the unknown key with the nearest known one."""
    text = _one_line(exc)
    merging = re.match(r"Error merging override ([^=\s]+)=.*? (Value .*)", text)
    if merging:  # a value of the wrong type
        return f"{merging.group(1)}: {merging.group(2)}"
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    for item in overrides:  # a syntax error: name the override, not the lexer's words alone
        try:
            OverridesParser.create().parse_overrides([item])
        except Exception as bad:  # noqa: BLE001 - the first override that fails is named
            reason = _one_line(bad).split("Error parsing override")[-1].strip(" '")
            reason = reason.removeprefix(item).strip(" '").removeprefix(
                "LexerNoViableAltException: ") or "a character the override syntax rejects"
            key = override_key(item) or "config"
            return (f"{key}: Error parsing override {item!r} ({reason[:120]}); expected "
                    f"key=value with balanced brackets and quotes, e.g. "
                    f"'{key}=[a,b]' or '{key}=\"a b\"'")
    unknown = re.search(r"Could not (?:override|append to|delete from) '([^']+)'", text) or \
        re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if unknown and "Could not find" not in text:
        key = unknown.group(1)
        return (f"{key}: not a config key{nearest(key, Config)}; expected a key of memgen's "
                f"schema (memgen/config/schema.py)")
    return f"config: {text}"


def to_schema(raw: DictConfig | dict) -> DictConfig:
    """Merge a plain config onto the structured schema (types, unknown keys) and validate."""
    schema = OmegaConf.structured(Config)
    try:
        cfg = cast(DictConfig, OmegaConf.merge(schema, raw))  # merged onto a structured dict
        check_closed(cfg, Config)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        msg = first_line(exc)
        raise ConfigError(f"{key}: {msg}" if key else f"config: {msg}") from None
    resolve_interpolations(cfg)
    validate(cfg)
    check_ranges(cfg, Config)
    return cfg


def overlay(run_cfg: DictConfig, cfg: DictConfig, sections: Iterable[str],
            trainer_keys: Iterable[str]) -> dict[str, Any]:
    """A logged run's config (task, model, seed: what made its model) with this command's
    ``sections`` and ``trainer_keys`` in place of the run's, as a plain dict."""
    data, mine = plain(run_cfg), plain(cfg)
    for key in sections:
        data[key] = mine[key]
    for key in trainer_keys:
        data["trainer"][key] = mine["trainer"][key]
    return data


def resolve_interpolations(cfg: DictConfig | ListConfig, prefix: str = "") -> None:
    """``${oc.env:X}`` and ``${a.b}`` resolved before any work starts: a key that does not resolve
    is a ConfigError naming it, never an error mid-run."""
    nodes: Iterable[tuple[Any, Any]] = (cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig)
                                        else enumerate(cfg))
    for key, _ in list(nodes):
        path = f"{prefix}.{key}" if prefix else str(key)
        if OmegaConf.is_interpolation(cfg, key):
            raw = cfg._get_node(key)._value()  # type: ignore[union-attr]  # the key exists
            try:
                cfg[key] = cfg[key]  # resolved once: the value the run uses
            except Exception as exc:  # noqa: BLE001 - every resolver error is bad input
                raise ConfigError(f"{path}: cannot resolve {raw} ({first_line(exc)[:200]}); "
                                  f"expected a value, ${{oc.env:VAR,default}} or "
                                  f"${{an.existing.key}}") from None
        else:
            child = cfg._get_node(key)
            if isinstance(child, DictConfig | ListConfig) and not child._is_none():
                resolve_interpolations(child, path)


# Sections and keys that change where and how fast a run goes, not what it computes.
RESULT_NEUTRAL = ("tracking", "output_dir", "replicate", "claims", "resume", "run",
                  "trainer.num_threads", "trainer.progress_bar")


def config_digest(cfg: DictConfig, drop: tuple[str, ...] = (), extra: str = "") -> str:
    """Six hex digits of what defines an experiment's results: the default names of studies
    and replicates change with it, so another setting never resumes an unrelated one.

    ``drop`` names top-level sections or ``section.key`` entries that do not change results.
    """
    data = plain(cfg)
    for key in drop:
        section, _, leaf = key.partition(".")
        if leaf:
            (data.get(section) or {}).pop(leaf, None)
        else:
            data.pop(section, None)
    text = OmegaConf.to_yaml(OmegaConf.create(data)) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:6]
