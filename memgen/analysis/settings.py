"""What the analysis looks at and how: typed settings and the subject, no config framework.

A notebook builds these directly (every field has the default of ``conf/analysis/default.yaml``,
except those a run takes from ``task.*``: ``n_conflict``, ``n_perturbations`` and
``Decoding.max_new_tokens``; tests/test_python_api.py holds it); ``memgen run`` builds them
once from its config with :func:`memgen.config.adapter.settings_from_config`. Settings are frozen: a
stage that picks a value (the tuned alpha) returns it, and the caller derives new settings with
``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from memgen.tasks.base import Task


@dataclass(frozen=True)
class Decoding:
    """How every stage generates: greedy (or beam search), in batches of prompts."""

    max_new_tokens: int = 8
    batch_size: int = 128
    num_beams: int = 1
    # steering's labels: proven by teacher-forced passes where they can be (the same outputs;
    # steering/forced_labels.py); the stages set it from ``SteeringSettings.forced_labels``
    forced_labels: bool = False


@dataclass(frozen=True)
class ProbeSettings:
    """The logistic probes, fitted full-batch with L-BFGS."""

    max_iter: int = 200  # L-BFGS iterations at most
    initial_step: float = 0.05  # L-BFGS initial step (its line search adapts it)
    weight_decay: float = 1e-3


RANKS = ("abs_r", "attribution")  # how steering ranks its neurons (steering/attribution.py)


@dataclass(frozen=True)
class SteeringSettings:
    """Which neurons are steered, how hard, against which controls; and the (k, alpha) grids."""

    alpha: float = 3.0
    top_k: int | None = None  # top_k and top_fraction None: the analysis selection's
    top_fraction: float | None = None
    last_prompt_only: bool = True
    sites: str = "mlp"  # "all", "resid", "mlp" or names like "resid.3,mlp.4"
    grid_alpha: tuple[float, ...] = (1.0, 3.0, 5.0, 9.0)
    grid_top_fraction: tuple[float, ...] = (0.05, 0.1)
    tune: bool = True  # pick (top_fraction, alpha) on the selection split
    tune_top_fraction: tuple[float, ...] = (0.05, 0.1, 0.2)
    tune_alpha: tuple[float, ...] = (1.0, 3.0, 5.0, 9.0)
    tune_max_control: float | None = 0.1
    tune_max_clean_drop: float | None = 0.02
    tune_max_items: int | None = 150  # per behaviour, tuning and grid (None: every item)
    # each direction at its own (top_fraction, alpha): +NMD and -NMD are two interventions
    tune_per_direction: bool = True
    controls: tuple[str, ...] = ("random", "low_r", "shuffled")
    # issue 26: the intervention (steering/intervene.py) and what tuning compares
    kind: str = "add"  # add | add_scaled | set_mean | interchange | ablate
    positions: str | None = None  # last_prompt | every_pass | prompt | all; None: last_prompt_only
    tune_kinds: tuple[str, ...] = ()  # empty: (kind,)
    tune_positions: tuple[str, ...] = ()  # empty: (positions,)
    # empty: (sites,); the default lets each direction pick MLP or decoder-layer outputs
    tune_sites: tuple[str, ...] = ("mlp", "resid")
    tune_keep: int = 2  # candidates refined over k x alpha after the one-cell screen
    ceiling: bool = True  # the GEN->MEM full-site interchange ceiling
    # abs_r (the paper) | attribution: NMD x the margin's gradient (steering/attribution.py)
    rank: str = "attribution"
    forced_labels: bool = False  # label steering's items by teacher-forced passes (same labels)

    def __post_init__(self) -> None:
        if self.rank not in RANKS:  # any other name would silently steer by abs(r)'s pick
            raise ValueError(f"rank: expected one of {list(RANKS)}, got {self.rank!r}")
        # ``positions`` wins over the legacy flag where both name the same thing
        if self.positions in ("last_prompt", "every_pass"):
            object.__setattr__(self, "last_prompt_only", self.positions == "last_prompt")

    def at(self, top_fraction: float, alpha: float) -> SteeringSettings:
        """The same steering at a given (top_fraction, alpha), e.g. the tuned pick."""
        return replace(self, top_k=None, top_fraction=float(top_fraction), alpha=float(alpha))


@dataclass(frozen=True)
class AnalysisSettings:
    """Every setting of the analysis stages (``analysis.*`` plus the task's and decoding's)."""

    decoding: Decoding = field(default_factory=Decoding)
    n_conflict: int = 400  # conflict examples generated on
    n_perturbations: int = 4  # variants of each
    sites: tuple[str, ...] = ("resid", "mlp")
    top_k: int | None = None
    top_fraction: float | None = 0.1
    selection_fraction: float = 0.5
    use_pairs: bool = True
    n_shuffles: int = 20
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    steering: SteeringSettings = field(default_factory=SteeringSettings)
    consistency: bool = True
    consistency_seeds: tuple[int, ...] = (1,)
    consistency_transfer: bool = True
    seed: int = 0

    def with_steering(self, steering: SteeringSettings) -> AnalysisSettings:
        return replace(self, steering=steering)

    @property
    def steering_decoding(self) -> Decoding:
        """How the steering stages decode: ``decoding`` with ``steering.forced_labels``."""
        return replace(self.decoding, forced_labels=self.steering.forced_labels)


@dataclass
class Subject:
    """The model analysed, its tokenizer and the task that makes its examples."""

    model: Any  # a Hugging Face causal LM (PreTrainedModel or PeftModel)
    tokenizer: Any
    task: Task
