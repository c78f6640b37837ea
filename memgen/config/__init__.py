"""The run configuration: :mod:`~memgen.config.schema` (keys, types, defaults),
:mod:`~memgen.config.compose` (``conf/`` + overrides through Hydra), :mod:`~memgen.config.validate`
(value checks) and :mod:`~memgen.config.adapter` (the analysis section as the analysis library's
settings).

The names below are re-exported so ``from memgen.config import compose, ConfigError`` keeps
working; new code may import them from their module.
"""

from memgen.config.compose import (
    PROJECT_ROOT,
    RESULT_NEUTRAL,
    check_conf_dir,
    check_overrides,
    compose,
    conf_dir,
    config_digest,
    first_line,
    overlay,
    resolve_interpolations,
    to_schema,
)
from memgen.config.schema import (
    CHECKPOINT_METRICS,
    MAX_EXAMPLES,
    AnalysisConfig,
    ClaimsConfig,
    Config,
    DecodingConfig,
    LoraConfig,
    ModelConfig,
    ProbeConfig,
    ReplicateConfig,
    SteeringConfig,
    SweepConfig,
    TaskConfig,
    TrackingConfig,
    TrainerConfig,
    checkpoint_metric,
    plain,
    ranged,
)
from memgen.config.validate import SEED_MAX, validate, validate_replicate
from memgen.errors import ConfigError

__all__ = [
    "CHECKPOINT_METRICS", "MAX_EXAMPLES", "PROJECT_ROOT", "RESULT_NEUTRAL", "SEED_MAX",
    "AnalysisConfig", "ClaimsConfig", "Config", "ConfigError", "DecodingConfig", "LoraConfig",
    "ModelConfig", "ProbeConfig", "ReplicateConfig", "SteeringConfig", "SweepConfig",
    "TaskConfig", "TrackingConfig", "TrainerConfig", "check_conf_dir", "check_overrides",
    "checkpoint_metric", "compose", "conf_dir", "config_digest", "first_line", "plain",
    "overlay", "resolve_interpolations", "ranged", "to_schema", "validate", "validate_replicate",
]
