"""One source of config defaults: the schema's dataclasses equal the composed ``conf/``.

:func:`memgen.config.to_schema` fills a stored config's missing keys from the schema, so a schema
default that differs from the YAML would silently change an old run when it is re-analysed.
(``AnalysisSettings()``'s defaults are held to the same config by tests/test_python_api.py.)
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from memgen.config import Config, compose, conf_dir, to_schema

# Keys whose default belongs to a YAML group option, not to the schema (memgen/config/schema.py).
YAML_ONLY = ("task.params",)


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested dict as ``dotted.key -> value`` (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def schema_defaults() -> dict[str, Any]:
    data = OmegaConf.to_container(OmegaConf.structured(Config))
    return {k: v for k, v in leaves(data).items() if not k.startswith(YAML_ONLY)}


def yaml_only_composition() -> dict[str, Any]:
    """``conf/config.yaml`` and its default groups composed by Hydra without the schema: only the
    keys the YAML itself sets."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    ConfigStore.instance().store(name="memgen_schema", node={})  # compose() stores Config again
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            raw = hydra_compose(config_name="config")
    finally:
        GlobalHydra.instance().clear()
    return leaves(OmegaConf.to_container(raw, resolve=True))


def test_every_schema_default_equals_the_composed_default_config():
    defaults = schema_defaults()
    composed = {k: v for k, v in leaves(OmegaConf.to_container(compose([]), resolve=True)).items()
                if not k.startswith(YAML_ONLY)}
    assert set(defaults) == set(composed)
    differing = {k: (defaults[k], composed[k]) for k in defaults if defaults[k] != composed[k]}
    assert differing == {}, f"schema default != conf/ (schema, yaml): {differing}"
    assert len(defaults) > 100  # every section is compared, not an empty walk


def test_every_key_the_yaml_sets_has_that_value_as_schema_default():
    """Independent of the schema merge: the YAML's own values, key by key."""
    defaults = schema_defaults()
    yaml = {k: v for k, v in yaml_only_composition().items() if not k.startswith(YAML_ONLY)}
    assert {"analysis.sites", "trainer.loss_on", "analysis.steering.tune"} <= set(yaml)
    assert {k: v for k, v in yaml.items() if defaults[k] != v} == {}
    # the values the issue found stale, by hand
    assert defaults["analysis.sites"] == ["resid", "mlp"]
    assert defaults["analysis.top_fraction"] == 0.1
    assert defaults["trainer.max_epochs"] == 25
    assert defaults["trainer.loss_on"] == "answer"
    assert (defaults["analysis.steering.sites"], defaults["analysis.steering.tune"],
            defaults["analysis.steering.last_prompt_only"]) == ("mlp", True, True)


def test_a_stored_config_missing_keys_is_filled_with_todays_defaults():
    stored = OmegaConf.to_container(compose([]), resolve=True)
    del stored["analysis"]["sites"], stored["analysis"]["steering"]["grid_alpha"]
    del stored["trainer"]["loss_on"], stored["trainer"]["max_epochs"]
    cfg = to_schema(OmegaConf.create(stored))
    assert cfg.analysis.sites == ["resid", "mlp"]
    assert cfg.analysis.steering.grid_alpha == [1.0, 3.0, 5.0, 9.0]
    assert (cfg.trainer.loss_on, cfg.trainer.max_epochs) == ("answer", 25)


def test_gpu_trainer_keeps_the_papers_whole_sequence_loss():
    assert compose(["trainer=gpu"]).trainer.loss_on == "sequence"
