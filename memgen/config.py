"""Structured config schema, composition over ``conf/`` and validation.

Every check runs before any work starts and raises :class:`ConfigError` with one line that names
the key and what was expected; the CLI turns it into exit code 2.

Every schema default equals the composed default config (``conf/config.yaml`` with its default
groups), so a stored config that lacks a newer key gets today's default from :func:`to_schema`;
``tests/test_config_defaults.py`` holds it. ``task.params`` is empty here: its keys belong to each
task's YAML (a merge would mix one task's params into another's).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from memgen.config_checks import (
    check_bool_values,
    check_closed,
    check_deletions,
    check_key_characters,
    check_ranges,
    nearest,
    ranged,
)
from memgen.tasks.registry import TASKS, build_params

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A bad config key, type or value; the message is one line naming the culprit."""


MAX_EXAMPLES = 100_000_000  # a task size beyond this would generate for hours, not fail
CHECKPOINT_METRICS = ("auto", "val/behavior_balance", "val/mem_gen_product", "val/pair_yield",
                      "val/pair_yield_with_both")
NEEDS_VARIANTS = ("val/pair_yield", "val/pair_yield_with_both")


def checkpoint_metric(cfg: DictConfig) -> str:
    """The validation metric that picks the kept checkpoint. ``auto``: where the task draws
    validation variants (``task.n_val_perturbations`` >= 2), the pair yield among the epochs
    that show both behaviours (``val/pair_yield_with_both``: what the analysis needs, examples
    whose variants split between MEM and GEN, and both behaviours to contrast), else the
    balance."""
    metric = str(cfg.trainer.checkpoint_metric)
    if metric != "auto":
        return metric
    return ("val/pair_yield_with_both" if cfg.task.n_val_perturbations >= 2
            else "val/behavior_balance")


@dataclass
class TaskConfig:
    name: str = "arithmetic"
    n_train: Any = 1500  # a positive integer, or "all" (task=files: every record as written)
    mem_ratio: float = 0.2
    n_conflict: int = ranged(600, 0, MAX_EXAMPLES)
    n_val_conflict: int = ranged(100, 0, MAX_EXAMPLES)
    n_clean: int = ranged(200, 0, MAX_EXAMPLES)
    n_perturbations: int = ranged(6, 0, 1000)
    # variants per validation conflict example (the original first, drawn from the validation
    # stream): >= 2 logs val/pair_yield each validation epoch; 1 generates on the originals only
    n_val_perturbations: int = ranged(3, 1, 1000)
    max_new_tokens: int = ranged(6, 0, 1_000_000)
    chat_template: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class ModelConfig:
    kind: str = "scratch"  # scratch | lora
    arch: str = "gpt2"  # gpt2 | llama (scratch models)
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 96
    intermediate_size: int = 0  # llama only; 0 = 4 * n_embd
    dropout: float = 0.0
    name_or_path: str | None = None  # lora: hub id or local directory
    lora: LoraConfig = field(default_factory=LoraConfig)
    log_merged: bool = False


@dataclass
class TrainerConfig:
    max_epochs: int = 25
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    loss_on: str = "answer"  # answer | sequence (the paper's)
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 1.0
    check_val_every_n_epoch: int = 1
    progress_bar: bool = True
    deterministic: bool = True
    num_threads: int = ranged(0, 0, 4096)  # 0 = torch default
    limit_train_batches: float = 1.0
    log_every_n_steps: int = ranged(10, 1)
    # auto (val/pair_yield_with_both where task.n_val_perturbations >= 2, else
    # val/behavior_balance), val/behavior_balance, val/mem_gen_product (the paper's),
    # val/pair_yield, or val/pair_yield_with_both: 1 + the pair yield at an epoch whose
    # validation originals are >= both_min_rate MEM and GEN, else the pair yield (every epoch
    # showing both behaviours ranks above every epoch that does not)
    checkpoint_metric: str = "auto"
    both_min_rate: float = ranged(0.2, 0, 0.5)
    # no validation epoch showed MEM and GEN: say so, keep the last epoch, skip the analysis
    # (false: analyse the kept checkpoint anyway, as tiny smoke tests do; the run is tagged)
    require_both: bool = True


@dataclass
class SteeringConfig:
    alpha: float = 3.0
    top_k: int | None = None
    top_fraction: float | None = None  # None: use analysis.top_fraction / top_k
    last_prompt_only: bool = True
    # which analysed sites may be steered (and where the controls' random neurons come from):
    # "all", "resid" (the paper: decoder-layer outputs), "mlp", or names like "resid.3,mlp.4"
    sites: str = "mlp"
    grid_alpha: list[float] = field(default_factory=lambda: [1.0, 3.0, 5.0, 9.0])
    grid_top_fraction: list[float] = field(default_factory=lambda: [0.05, 0.1])
    # pick (top_fraction, alpha) per model on the *selection* split (the evaluation split is
    # only steered once, at the pick): NMD scales differ from model to model
    tune: bool = True
    tune_top_fraction: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    tune_alpha: list[float] = field(default_factory=lambda: [1.0, 3.0, 5.0, 9.0])
    # the budget: the most successful cell whose best control and clean-accuracy drop stay
    # within these; none within it (or both null): the best success - control - drop
    tune_max_control: float | None = 0.1
    tune_max_clean_drop: float | None = 0.02
    # items per behaviour that tuning and the grid steer (a seeded subsample of the split;
    # null = all): the evaluation split is still steered whole, once
    tune_max_items: int | None = 150
    # each direction steered at its own best cell (its own controls and clean drop within the
    # budget): toward MEM and toward GEN are two interventions; false: one cell for both
    tune_per_direction: bool = True
    controls: list[str] = field(default_factory=lambda: ["random", "low_r", "shuffled"])
    # issue 26: kind and positions of the intervention, and the candidates tuning compares
    # (empty lists: the kind / positions / sites above); positions null: last_prompt_only
    kind: str = "add"
    positions: str | None = None
    tune_kinds: list[str] = field(default_factory=list)
    tune_positions: list[str] = field(default_factory=list)
    tune_sites: list[str] = field(default_factory=list)
    tune_keep: int = 2
    ceiling: bool = True
    # label steered and unsteered items of tuning, evaluation and the grid by teacher-forced
    # passes where that proves greedy's output (the same labels); false: decode every item
    forced_labels: bool = False


@dataclass
class ProbeConfig:
    max_iter: int = ranged(200, 1)  # L-BFGS iterations at most (probes are fitted full-batch)
    initial_step: float = 0.05  # L-BFGS initial step; its line search adapts it
    weight_decay: float = 1e-3


@dataclass
class DecodingConfig:
    """How labels, validation and steering generate (greedy, or beam search)."""

    num_beams: int = 1


@dataclass
class AnalysisConfig:
    enabled: bool = True
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    sites: list[str] = field(default_factory=lambda: ["resid", "mlp"])
    top_k: int | None = None
    top_fraction: float | None = 0.1
    selection_fraction: float = 0.5
    use_pairs: bool = True
    n_shuffles: int = 20
    batch_size: int = 128
    every_n_val_epochs: int = 0  # >0: callbacks log these stages during training
    callback_stages: list[str] = field(default_factory=lambda: ["neurons", "probes", "steering"])
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    consistency: bool = True
    # extra perturbation seeds: each relabels the conflict set on new variants, and its pairs'
    # neuron selection is compared with the base pairs' (intra-task consistency across samples)
    consistency_seeds: list[int] = field(default_factory=lambda: [1])
    # neurons selected on half B of the pairs steer half A's items (with the controls)
    consistency_transfer: bool = True


@dataclass
class TrackingConfig:
    uri: str | None = None  # default: sqlite:///<project>/mlruns/mlflow.db
    artifact_root: str | None = None  # default: <project>/mlruns/artifacts
    experiment: str = "memgen"
    run_name: str | None = None
    log_model: bool = True
    log_checkpoints: bool = True
    system_metrics_s: float = 5.0  # MLflow's CPU/memory/GPU sampling interval; 0 = off
    full_summary: bool = False  # print every metric after a run, not only the headline
    ui_url: str = "http://127.0.0.1:5000"  # where `memgen ui` serves: printed run links


@dataclass
class SweepConfig:
    name: str = "none"
    kind: str = "steering"  # steering | training
    study_name: str | None = None
    storage: str | None = None
    n_trials: int = 20
    timeout: float | None = None
    workers: int = 1
    sampler_seed: int = 0
    pruner: str = "median"  # none | median
    run_id: str | None = None
    objectives: list[dict[str, str]] = field(default_factory=list)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ReplicateConfig:
    """``memgen replicate``: the same experiment over several training seeds."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    workers: int = 1  # parallel processes; the cores are split between them
    name: str | None = None  # the parent run's name (default: replicate-<task>-<config digest>)
    # an earlier replicate's parent run id: re-analyse its seeds' models, no training
    models: str | None = None


@dataclass
class ClaimsConfig:
    """Thresholds of the claims scorecard (memgen/replicates/claims.py): each of the paper's
    findings as a test on a run's summary metrics."""

    min_behavior_rate: float = 0.2  # kept checkpoint: MEM and GEN each at least this
    min_pairs: int = 200  # MEM/GEN pairs for the analysis
    # max |r| above the shuffled-label q95 by more than this
    min_r_margin: float = ranged(0.0, -1, 1)
    # best probe above its strongest baseline by at least this
    min_probe_margin: float = ranged(0.05, -1, 1)
    # success above the strongest control, weaker direction
    min_steer_margin: float = ranged(0.5, -1, 1)
    max_clean_drop: float = 0.02  # clean-input accuracy lost to steering, worse direction
    max_p_value: float = 0.01  # overlap p-values (intra-task halves, inter-task pairs)
    # half B's neurons on half A: success above controls
    min_transfer_margin: float = ranged(0.0, -1, 1)


@dataclass
class Config:
    seed: int = 0
    output_dir: str = "outputs"
    resume: str | None = None  # an MLflow run id to continue
    run: str | None = None  # memgen analyse: the finished run whose model is analysed
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    replicate: ReplicateConfig = field(default_factory=ReplicateConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)


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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

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
    import re

    text = _one_line(exc)
    merging = re.match(r"Error merging override ([^=\s]+)=.*? (Value .*)", text)
    if merging:  # a value of the wrong type
        return f"{merging.group(1)}: {merging.group(2)}"
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for item in overrides:  # a syntax error: name the override, not the lexer's words alone
        try:
            OverridesParser.create().parse_overrides([item])
        except Exception as bad:  # noqa: BLE001 - the first override that fails is named
            reason = _one_line(bad).split("Error parsing override")[-1].strip(" '")
            reason = reason.removeprefix(item).strip(" '").removeprefix(
                "LexerNoViableAltException: ") or "a character the override syntax rejects"
            key = item.partition("=")[0].lstrip("+~") or "config"
            return (f"{key}: Error parsing override {item!r} ({reason[:120]}); expected "
                    f"key=value with balanced brackets and quotes, e.g. "
                    f"'{key}=[a,b]' or '{key}=\"a b\"'")
    unknown = re.search(r"Could not (?:override|append to|delete from) '([^']+)'", text) or \
        re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if unknown and "Could not find" not in text:
        key = unknown.group(1)
        return (f"{key}: not a config key{nearest(key, Config)}; expected a key of memgen's "
                f"schema (memgen/config.py)")
    return f"config: {text}"


def to_schema(raw: DictConfig | dict) -> DictConfig:
    """Merge a plain config onto the structured schema (types, unknown keys) and validate."""
    schema = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(schema, raw)
        check_closed(cfg, Config)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        msg = first_line(exc)
        raise ConfigError(f"{key}: {msg}" if key else f"config: {msg}") from None
    resolve_interpolations(cfg)
    validate(cfg)
    check_ranges(cfg, Config)
    return cfg


def resolve_interpolations(cfg: DictConfig, prefix: str = "") -> None:
    """``${oc.env:X}`` and ``${a.b}`` resolved now, naming the key that does not resolve (they
    used to fail mid-run, with a traceback)."""
    nodes = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, _ in list(nodes):
        path = f"{prefix}.{key}" if prefix else str(key)
        if OmegaConf.is_interpolation(cfg, key):
            raw = cfg._get_node(key)._value()
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


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _check_finite(node: Any, prefix: str = "") -> None:
    """Every float in the config is finite: ``trainer.weight_decay=nan`` trained NaNs."""
    if isinstance(node, DictConfig):
        for key in node:
            _check_finite(node[key],
                          f"{prefix}.{key}" if prefix else str(key))
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
            build_params(t.name, OmegaConf.to_container(t.params)).validate()
        except Exception as exc:  # noqa: BLE001 - a user's rule file is imported here
            from memgen.boundary import task_error

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


# Sections and keys that change where and how fast a run goes, not what it computes.
RESULT_NEUTRAL = ("tracking", "output_dir", "replicate", "claims", "resume", "run",
                  "trainer.num_threads", "trainer.progress_bar")


def config_digest(cfg: DictConfig, drop: tuple[str, ...] = (), extra: str = "") -> str:
    """Six hex digits of what defines an experiment's results: the default names of studies
    and replicates change with it, so another setting never resumes an unrelated one.

    ``drop`` names top-level sections or ``section.key`` entries that do not change results.
    """
    import hashlib

    data = OmegaConf.to_container(cfg, resolve=True)
    for key in drop:
        section, _, leaf = key.partition(".")
        if leaf:
            (data.get(section) or {}).pop(leaf, None)
        else:
            data.pop(section, None)
    text = OmegaConf.to_yaml(OmegaConf.create(data)) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:6]


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
