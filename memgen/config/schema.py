"""The config's schema: one dataclass per section, the keys, types, ranges and defaults.

Every schema default equals the composed default config (``conf/config.yaml`` with its default
groups), so a stored config that lacks a newer key gets today's default from
:func:`memgen.config.compose.to_schema`; ``tests/test_config_defaults.py`` holds it.
``task.params`` is empty here: its keys belong to each task's YAML (a merge would mix one task's
params into another's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

DEFAULT_RANGE = (0, None)  # numeric keys are counts, sizes, rates or seconds unless declared


def ranged(default: Any = dataclasses.MISSING, low: float | None = 0, high: float | None = None,
           **kwargs: Any) -> Any:
    """A schema field with its accepted range (inclusive; None = unbounded)."""
    return field(default=default, metadata={"range": (low, high)}, **kwargs)


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


def plain(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """A config as plain nested dicts (interpolations resolved unless ``resolve=False``)."""
    data = OmegaConf.to_container(cfg, resolve=resolve)
    assert isinstance(data, dict), type(data)
    return data  # type: ignore[return-value]  # a DictConfig's keys are strings


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
    tune_sites: list[str] = field(default_factory=lambda: ["mlp", "resid"])
    tune_keep: int = 2
    ceiling: bool = True
    # how the steered neurons are ranked: abs_r (the paper) or attribution (NMD x the margin's
    # gradient on the selection split: steering/attribution.py)
    rank: str = "attribution"
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
    # true: a new parent run even where one of this config and these seeds exists (its
    # finished seeds are kept, not reused): after a code change, whose numbers the old ones
    # are not
    fresh: bool = False


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
