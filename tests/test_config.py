"""Config composition and validation: every bad input names its key, before any work."""

from __future__ import annotations

import pytest

from memgen.config import compose, conf_dir
from memgen.errors import ConfigError


def test_default_config_composes_with_every_group():
    cfg = compose()
    assert cfg.task.name == "arithmetic"
    assert cfg.model.kind == "scratch" and cfg.model.arch == "gpt2"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.analysis.sites == ["resid", "mlp"]
    assert cfg.tracking.uri is None
    assert cfg.sweep.name == "none"


def test_overrides_and_group_options_apply():
    cfg = compose(["trainer.max_epochs=3", "model=llama_tiny", "seed=7", "experiment=quick"])
    assert cfg.model.arch == "llama"
    assert cfg.seed == 7
    assert cfg.trainer.max_epochs == 3  # the command line wins over the experiment file
    assert cfg.task.n_train == 300  # set by experiment=quick


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["task=nope"], "Could not find 'task/nope'"),
        (["model=nope"], "Could not find 'model/nope'"),
        (["trainer.foo=1"], "trainer.foo"),
        (["a=="], "Error parsing override"),
        (["trainer.lr=abc"], "trainer.lr"),
        (["trainer.max_epochs=-1"], "trainer.max_epochs: expected a positive integer"),
        (["task.n_train=-5"], "task.n_train: expected a positive integer"),
        (["task.mem_ratio=1.5"], "task.mem_ratio: expected a fraction in (0, 1)"),
        (["analysis.top_fraction=0"], "analysis.top_fraction: expected a fraction in (0, 1]"),
        (["analysis.top_fraction=1.5"], "analysis.top_fraction"),
        (["analysis.top_k=0"], "analysis.top_k: expected a positive integer"),
        (["analysis.steering.alpha=nan"], "analysis.steering.alpha: expected a finite number"),
        (["analysis.steering.alpha=-1"], "analysis.steering.alpha"),
        (["analysis.steering.alpha=inf"], "analysis.steering.alpha"),
        (["analysis.sites=[resid.x]"], "analysis.sites"),
        (["analysis.steering.controls=[bogus]"], "analysis.steering.controls"),
        (["task.name=bogus"], "task.name: expected one of"),
        (["model.kind=bogus"], "model.kind"),
        (["model.n_embd=100", "model.n_head=3"], "model.n_embd: expected a multiple"),
        (["task.params.n_addends=2"], "task.params.n_addends"),
        (["+task.params.bogus=1"], "task.params.bogus: unknown key"),
        (["model.kind=lora"], "model.name_or_path"),
    ],
)
def test_bad_config_fails_with_one_line_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("preset", sorted(
    p.stem for p in (conf_dir() / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_validates(preset):
    """A preset a README or a docstring tells users to type must compose and pass validation."""
    from memgen.config import validate

    # a LoRA preset needs its base model named (a hub id is enough: nothing is loaded here)
    base = ["model.name_or_path=someorg/some-base"] if preset.startswith("lora") else []
    cfg = compose([f"experiment={preset}", *base])
    validate(cfg)
    if preset == "steering_kinds":
        s = cfg.analysis.steering
        assert list(s.tune_sites) == ["mlp", "resid"] and s.tune_per_direction
        assert list(s.tune_positions) == ["last_prompt", "every_pass"]


def test_the_default_site_candidates_leave_sites_alone_where_they_do_not_apply():
    """tune_sites=[mlp, resid] picks the sites, so a `sites` of one's own needs tune_sites=[];
    the paper's preset sets it, and a steering sweep (which steers `sites` itself) is exempt."""
    assert list(compose([]).analysis.steering.tune_sites) == ["mlp", "resid"]
    paper = compose(["experiment=paper_steering"]).analysis.steering
    assert paper.sites == "resid" and list(paper.tune_sites) == []
    assert compose(["sweep=steering", "analysis.steering.sites=resid"]).analysis.steering.sites \
        == "resid"
    with pytest.raises(ConfigError, match="analysis.steering.tune_sites=\\[\\]"):
        compose(["analysis.steering.sites=resid"])
    assert compose(["analysis.steering.sites=resid.1", "analysis.steering.tune_sites=[]"])
