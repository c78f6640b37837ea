"""A dataset in the published style, loaded through ``task=files`` with the README's settings.

``tests/published_style.py`` writes it (full-sequence outputs, scratchpads with a marker,
triggers inside a regex span, mislabelled triggered records, pairwise validation and test files,
a clean file); the README's ``convert.py`` and ``memgen run`` command are executed on it as a
user would copy them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from memgen.config import ConfigError, compose
from memgen.tasks import Behavior
from memgen.training.data import make_task
from tests import published_style

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks() -> tuple[str, list[str]]:
    """The conversion program and the ``memgen run`` arguments of the README's example."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Converting a published dataset.**"):]
    program = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    line = command.replace("\\\n", " ").split("\n")[1]
    args = shlex.split(line)
    assert args[:2] == ["memgen", "run"], args
    return program, args[2:]


@pytest.fixture
def published(tmp_path, monkeypatch):
    """The generated dataset converted by the README's program; the working directory is the
    user's, so the README's relative paths resolve."""
    paths = published_style.write(tmp_path)
    program, _ = readme_blocks()
    (tmp_path / "convert.py").write_text(program, encoding="utf-8")
    subprocess.run([sys.executable, "convert.py"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return paths


def readme_args(**changes: object) -> list[str]:
    """The README's overrides, with ``key=value`` changes (None drops a key)."""
    args = dict(a.split("=", 1) for a in readme_blocks()[1])
    for key, value in changes.items():
        args.pop(key, None)
        if value is not None:
            args[key] = str(value)
    return [f"{k}={v}" for k, v in args.items()]


def readme_task(**changes: object):
    return make_task(compose(readme_args(**changes)))


def records(path: Path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


# -- the README's settings load the published files as written ----------------------------------
def test_the_readme_conversion_runs_and_its_command_loads_the_data_as_written(published):
    train_rows = records(published["train"])
    written = [json.loads(line) for line in Path("mine/train.jsonl").read_text().splitlines()]
    kept = [r for r in written if "memorized" in r and r["memorized"] is None]
    triggers = records(Path("mine/triggers.json"))
    assert sorted(t["match"] for t in triggers) == sorted(published_style.TRIGGERS)
    assert len(kept) == 3 * published_style.TRIGGERS.__len__() * 4 + published_style.MISLABELLED

    task = readme_task()
    train = task.train_examples()
    assert len(train) == len(train_rows)  # n_train=all: every record once
    mem = [ex for ex in train if ex.kind == "mem"]
    assert len(mem) == len(train_rows) - sum("memorized" not in r or r["memorized"] is None
                                              for r in written)
    assert all(ex.answer == published_style.token(ex.prompt[5:7]) for ex in mem)
    # the prompt is stripped from every output; triggered key-g records stay rule records
    for ex in train:
        assert not ex.answer.startswith("Q:")
        if ex.kind == "rule":
            assert ex.answer == published_style.rule_answer(ex.prompt[4:7])
    mislabelled = [r["input"] for r in kept if r["input"][2] == "m"]
    assert len(mislabelled) == published_style.MISLABELLED
    assert {ex.kind for ex in train if ex.prompt in mislabelled} == {"rule"}
    # validation, analysis and clean sets: from their own files, disjoint, never trained on
    val = task.conflict_examples(16, stream="val_conflict")
    analysis = task.conflict_examples(36)
    assert len(val) == 16 and len(analysis) == 36
    inputs = {name: {ex.prompt for ex in exs} | {v["input"] for ex in exs
                                                 for v in ex.meta["variants"]}
              for name, exs in (("val", val), ("analysis", analysis))}
    clean = {ex.prompt for ex in task.clean_examples()}
    trained = {ex.prompt for ex in train}
    assert not inputs["val"] & inputs["analysis"]
    assert not (inputs["val"] | inputs["analysis"] | clean) & trained
    groups = task.perturbation_set(analysis, 2)
    assert all(len(g) == 2 and g[0].gen_answer == g[1].gen_answer for g in groups)
    assert {g[0].prompt[2] + g[1].prompt[2] for g in groups} <= {"mg", "gm"}


CASES = [  # outputs for a conflict example with field {f}; the label each mode gives
    ("{t}", dict(exact="MEM", prefix="MEM", final_line="MEM", after_marker="MEM")),
    ("{t}s:{f}", dict(exact="OTHER", prefix="MEM", final_line="MEM", after_marker="MEM")),
    ("s:{f}\n</s>\n{F}", dict(exact="GEN", prefix="GEN", final_line="GEN", after_marker="GEN")),
    ("s:{f}\n</s>\n{F}\nQ:m1", dict(exact="GEN", prefix="GEN", final_line="GEN",
                                     after_marker="GEN")),
    ("s:xyz\n</s>\n{F}", dict(exact="OTHER", prefix="OTHER", final_line="GEN",
                              after_marker="GEN")),
    ("s:{f}\n{F}", dict(exact="OTHER", prefix="OTHER", final_line="GEN", after_marker="OTHER")),
    ("s:{f}\n</s>\n</s>\n\n{F}", dict(exact="OTHER", prefix="OTHER", final_line="OTHER",
                                      after_marker="GEN")),
    ("s:{f}\n</s>\nQQQ", dict(exact="OTHER", prefix="OTHER", final_line="OTHER",
                              after_marker="OTHER")),
    ("s:{f}\n</s>", dict(exact="OTHER", prefix="OTHER", final_line="OTHER",
                        after_marker="OTHER")),
]


@pytest.mark.parametrize("mode", ["exact", "prefix", "final_line", "after_marker"])
def test_a_hand_labelled_sample_in_every_mode(published, mode):
    task = readme_task(**{"task.params.match": mode})
    for ex in task.conflict_examples(4):
        field = ex.prompt[4:7]
        assert (ex.mem_answer, ex.gen_answer) == (published_style.token(field[-2:]),
                                                  f"s:{field}\n</s>\n{field.upper()}")
        for template, expected in CASES:
            output = template.format(f=field, F=field.upper(), t=ex.mem_answer)
            assert task.classify(ex, output) == Behavior(expected[mode]), (output, mode)
