"""The one adapter from memgen's Hydra config to the analysis settings.

The pipeline, the training callbacks and the sweeps call it once per config; ``analysis/``
itself never sees a config.
"""

from __future__ import annotations

from omegaconf import DictConfig

from memgen.analysis.settings import (
    AnalysisSettings,
    Decoding,
    ProbeSettings,
    SteeringSettings,
)


def settings_from_config(cfg: DictConfig) -> AnalysisSettings:
    """``analysis.*``, ``task.n_conflict/n_perturbations/max_new_tokens``,
    ``analysis.decoding.num_beams`` and ``seed`` as typed settings."""
    a, s, p = cfg.analysis, cfg.analysis.steering, cfg.analysis.probe
    steering = SteeringSettings(
        alpha=float(s.alpha), top_k=s.top_k, top_fraction=s.top_fraction,
        last_prompt_only=bool(s.last_prompt_only), sites=str(s.sites),
        grid_alpha=tuple(s.grid_alpha), grid_top_fraction=tuple(s.grid_top_fraction),
        tune=bool(s.tune), tune_top_fraction=tuple(s.tune_top_fraction),
        tune_alpha=tuple(s.tune_alpha), tune_max_control=s.tune_max_control,
        tune_max_clean_drop=s.tune_max_clean_drop,
        tune_max_items=None if s.tune_max_items is None else int(s.tune_max_items),
        tune_per_direction=bool(s.tune_per_direction),
        controls=tuple(s.controls),
        kind=str(s.kind), positions=None if s.positions is None else str(s.positions),
        tune_kinds=tuple(s.tune_kinds), tune_positions=tuple(s.tune_positions),
        tune_sites=tuple(str(x) for x in s.tune_sites), tune_keep=int(s.tune_keep),
        ceiling=bool(s.ceiling), forced_labels=bool(s.forced_labels), rank=str(s.rank))
    return AnalysisSettings(
        decoding=Decoding(max_new_tokens=int(cfg.task.max_new_tokens),
                          batch_size=int(a.batch_size), num_beams=int(a.decoding.num_beams)),
        n_conflict=int(cfg.task.n_conflict), n_perturbations=int(cfg.task.n_perturbations),
        sites=tuple(a.sites), top_k=a.top_k, top_fraction=a.top_fraction,
        selection_fraction=float(a.selection_fraction), use_pairs=bool(a.use_pairs),
        n_shuffles=int(a.n_shuffles),
        probe=ProbeSettings(max_iter=int(p.max_iter), initial_step=float(p.initial_step),
                            weight_decay=float(p.weight_decay)),
        steering=steering, consistency=bool(a.consistency),
        consistency_seeds=tuple(a.consistency_seeds),
        consistency_transfer=bool(a.consistency_transfer), seed=int(cfg.seed))
