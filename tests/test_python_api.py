"""The README's "Use from Python" example runs as written on a local model: no MLflow, Hydra or
download."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import memgen

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_analyses_a_saved_model(tmp_path, capsys):
    from memgen.training.data import task_tokenizer

    task = memgen.build_task("arithmetic", seed=0, n_conflict=50, n_clean=20)
    tokenizer = task_tokenizer(task)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16,
                                       n_layer=2, n_head=2))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    code = readme_example()
    assert code.count('"path/to/model"') == 2
    namespace: dict = {}
    exec(compile(code.replace("path/to/model", str(tmp_path)), "README.md", "exec"), namespace)
    analysis = namespace["analysis"]
    counts = analysis.behaviors.labelled.counts()
    assert counts["n_examples"] == 50 and counts["n_variants"] == 50 * 4  # n_perturbations
    assert counts["n_mem"] + counts["n_gen"] + counts["n_other"] == counts["n_variants"]
    assert str(analysis.metrics["pairs/n"]) in capsys.readouterr().out
    # an untrained model never answers MEM on one variant and GEN on another: no pairs, and the
    # reason is given for every stage
    assert analysis.neurons is None and analysis.metrics["pairs/n"] == 0
    assert set(analysis.skipped) == {"neurons", "probes", "steering", "grid", "consistency"}
    assert all("conflict examples got MEM" in why for why in analysis.skipped.values())


def test_the_api_loads_lazily_and_names_its_exports():
    assert set(memgen.__all__) >= {"AnalysisSettings", "Subject", "analyse_model", "build_task"}
    assert all(getattr(memgen, name) is not None for name in memgen.__all__)


def test_the_settings_defaults_are_the_default_configs():
    """A notebook's ``AnalysisSettings()`` analyses as ``memgen run`` does by default; every
    config key the adapter reads reaches the settings."""
    import dataclasses

    from memgen.config import compose
    from memgen.config.adapter import settings_from_config

    cfg = compose()
    settings = settings_from_config(cfg)
    assert settings.probe == memgen.ProbeSettings()
    assert settings.steering == memgen.SteeringSettings()
    defaults = memgen.AnalysisSettings()
    for f in dataclasses.fields(defaults):
        if f.name not in ("decoding", "n_conflict", "n_perturbations"):  # the task's
            assert getattr(settings, f.name) == getattr(defaults, f.name), f.name
    assert settings.decoding == memgen.Decoding(
        max_new_tokens=cfg.task.max_new_tokens, batch_size=cfg.analysis.batch_size,
        num_beams=cfg.analysis.decoding.num_beams)
    assert (settings.n_conflict, settings.n_perturbations) == (cfg.task.n_conflict,
                                                                cfg.task.n_perturbations)
    other = settings_from_config(compose(["analysis.steering.alpha=7.5", "seed=3",
                                          "analysis.probe.max_iter=17"]))
    assert (other.steering.alpha, other.seed, other.probe.max_iter) == (7.5, 3, 17)
