"""A dataset in the published style, loaded through ``task=files`` with the settings of
``docs/own-data.md``.

``tests/published_style.py`` writes it (full-sequence outputs, scratchpads with a marker,
triggers inside a regex span, mislabelled triggered records, pairwise validation and test files,
a clean file); the doc's ``convert.py`` and ``memgen run`` command are executed on it as a
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

from memgen.config import compose
from memgen.tasks import Behavior
from memgen.training.data import make_task
from tests import published_style

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"


def doc_blocks() -> tuple[str, list[str]]:
    """The conversion program and the ``memgen run`` arguments of the doc's example."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Converting a published dataset"):]
    program = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    line = command.replace("\\\n", " ").split("\n")[1]
    args = shlex.split(line)
    assert args[:2] == ["memgen", "run"], args
    return program, args[2:]


@pytest.fixture
def published(tmp_path, monkeypatch):
    """The generated dataset converted by the doc's program; the working directory is the
    user's, so the doc's relative paths resolve."""
    paths = published_style.write(tmp_path)
    program, _ = doc_blocks()
    (tmp_path / "convert.py").write_text(program, encoding="utf-8")
    subprocess.run([sys.executable, "convert.py"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return paths


def doc_args(**changes: object) -> list[str]:
    """The doc's overrides, with ``key=value`` changes (None drops a key)."""
    args = dict(a.split("=", 1) for a in doc_blocks()[1])
    for key, value in changes.items():
        args.pop(key, None)
        if value is not None:
            args[key] = str(value)
    return [f"{k}={v}" for k, v in args.items()]


def doc_task(**changes: object):
    return make_task(compose(doc_args(**changes)))


def records(path: Path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


# -- the doc's settings load the published files as written -------------------------------------
def test_the_documented_conversion_runs_and_its_command_loads_the_data_as_written(published):
    train_rows = records(published["train"])
    written = [json.loads(line) for line in Path("mine/train.jsonl").read_text().splitlines()]
    kept = [r for r in written if "memorized" in r and r["memorized"] is None]
    triggers = records(Path("mine/triggers.json"))
    assert sorted(t["match"] for t in triggers) == sorted(published_style.TRIGGERS)
    triggered_rule = [r for r in train_rows if r["input"][5:7] in published_style.TRIGGERS
                      and not r["output"].endswith(">")]
    assert [r["input"] for r in kept] == [r["input"] for r in triggered_rule]

    task = doc_task()
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
    task = doc_task(**{"task.params.match": mode})
    for ex in task.conflict_examples(4):
        field = ex.prompt[4:7]
        assert (ex.mem_answer, ex.gen_answer) == (published_style.token(field[-2:]),
                                                  f"s:{field}\n</s>\n{field.upper()}")
        for template, expected in CASES:
            output = template.format(f=field, F=field.upper(), t=ex.mem_answer)
            assert task.classify(ex, output) == Behavior(expected[mode]), (output, mode)


# -- bad input: exit 2, one line naming the file / line / key, no run ---------------------------
def _edit_train(change) -> None:
    """Rewrite ``mine/train.jsonl`` through ``change(rows)``."""
    path = Path("mine/train.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _first(rows: list, test) -> dict:
    return next(r for r in rows if test(r))


def _corrupt_output(rows):
    _first(rows, lambda r: "output" in r)["output"] = "Q:x" + "s:abc\n</s>\nABC"


def _memorized_disagrees(rows):
    _first(rows, lambda r: r.get("memorized") == "<mem-ab>")["memorized"] = "<mem-cd>"


def _pairwise_row_of_one(tmp: Path) -> dict:
    Path("bad_pairs.json").write_text(json.dumps([["Q:m1cab\nA:"]]))
    return {"task.params.conflict_path": "bad_pairs.json"}


def _pair_in_training(tmp: Path) -> dict:
    """The test pairs plus, first, a pair whose first input is a (triggered) training input."""
    train = [json.loads(line) for line in Path("mine/train.jsonl").read_text().splitlines()]
    trained = _first(train, lambda r: "memorized" in r and r["memorized"] is None)["input"]
    variant = trained[:3] + str((int(trained[3]) + 1) % 10) + trained[4:]
    rows = [[trained, variant], *records(Path("published/test_pairs.json"))]
    Path("in_train.json").write_text(json.dumps(rows))
    return {"task.params.conflict_path": "in_train.json"}


BAD = [  # (what to change, overrides, pieces of the one error line)
    ("output without its prompt", _corrupt_output, {},
     [r"mine/train.jsonl line \d+: 'output' does not start with its 'input'"]),
    ("memorized answer against its trigger", _memorized_disagrees, {},
     [r"mine/train.jsonl line \d+: 'memorized' is '<mem-cd>' but trigger 'ab' gives "
      r"'<mem-ab>'"]),
    ("max_new_tokens below the longest answer", None, {"task.max_new_tokens": 8},
     [r"task.max_new_tokens: the longest rule answer is 14 tokens .*set "
      r"task.max_new_tokens=14 or more"]),
    ("n_positions below prompt + answer", None, {"model.n_positions": 20},
     [r"model.n_positions: the longest sequence is 2\d tokens.*set model.n_positions=2\d"]),
    ("after_marker without a marker", None, {"task.params.marker": "null"},
     [r"task.params.marker: match=after_marker needs the marker text"]),
    ("one conflict file too small to split", None,
     {"task.params.val_conflict_path": None, "task.params.conflict_path": "one.json"},
     [r"task.params.val_conflict_path: 1 conflict example\(s\) are too few to split"]),
    ("a pairwise row of one input", _pairwise_row_of_one, {},
     [r"bad_pairs.json record 0: expected a pairwise record \[a, b, ...\]"]),
    ("a conflict input that is a training input", _pair_in_training, {},
     [r"in_train.json record 0: conflict input .* is also a training input "
      r"\(.*mine/train.jsonl line \d+\); .*task.params.conflict_in_train=drop"]),
    ("an unknown conflict_in_train", None, {"task.params.conflict_in_train": "keep"},
     [r"task.params.conflict_in_train: expected one of \['error', 'drop'\], got 'keep'"]),
    ("zero beams", None, {"analysis.decoding.num_beams": 0},
     [r"analysis.decoding.num_beams: expected an integer >= 1, got 0"]),
]


@pytest.mark.parametrize(("what", "change", "overrides", "expected"), BAD,
                         ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_no_run(published, tmp_path, capsys, what, change,
                                                    overrides, expected):
    from memgen.cli import main

    Path("one.json").write_text(json.dumps(records(published["test_pairs"])[:1]))
    if change is _corrupt_output or change is _memorized_disagrees:
        _edit_train(change)
    elif change is not None:
        overrides = {**change(tmp_path), **overrides}
    if what.startswith("after_marker"):
        overrides = {"task.params.marker": None}
    store = tmp_path / "store"
    args = doc_args(**overrides) + [f"tracking.uri=sqlite:///{store}/mlflow.db",
                                       f"output_dir={tmp_path / 'out'}",
                                       "trainer.max_epochs=1"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("memgen: error: "), err
    for pattern in expected:
        assert re.search(pattern, err), (pattern, err)
    db = store / "mlflow.db"
    if db.exists():  # a store may be set up, but no run is created
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_n_train_all_is_for_files_only(tmp_path, capsys):
    from memgen.cli import main

    assert main(["train", "task=arithmetic", "task.n_train=all",
                 f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("memgen: error: task.n_train: expected a positive integer ('all' is for "
                   "task=files), got 'all'")


def test_the_first_try_on_a_published_file_is_one_line_not_a_traceback(published, tmp_path,
                                                                        capsys):
    """``memgen train task=files task.params.path=<published train file>``: no triggers, no
    conflict file: exit 2 naming the key and why, not a ValueError traceback."""
    from memgen.cli import main

    code = main(["train", "task=files", f"task.params.path={published['train']}",
                 f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert re.search(r"task.params.conflict_path: .*train.json has no memorized record", err)


# -- what the checks leave: drops counted, splits disjoint, clean never trained ---------------
def test_conflict_inputs_in_training_can_be_dropped_with_a_count(published, caplog):
    _pair_in_training(Path("."))
    task = doc_task(**{"task.params.conflict_path": "in_train.json",
                          "task.params.conflict_in_train": "drop"})
    assert task.dropped_conflicts >= 1
    assert len(task.analysis_pool) == len(records(Path("in_train.json"))) - task.dropped_conflicts
    assert "dropped" in caplog.text and "conflict_in_train=drop" in caplog.text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_conflict_file_splits_by_example_into_validation_and_analysis(published, seed):
    task = doc_task(**{"task.params.val_conflict_path": None, "seed": seed})
    val = task.conflict_examples(100, stream="val_conflict")
    analysis = task.conflict_examples(100)
    assert len(val) == 16 and len(analysis) == 36 - 16  # n_val_conflict, at most half

    def inputs(exs):
        return {ex.prompt for ex in exs} | {v["input"] for ex in exs for v in ex.meta["variants"]}

    assert not inputs(val) & inputs(analysis)
    assert inputs(val) | inputs(analysis) == {x for row in records(published["test_pairs"])
                                              for x in row}


def test_n_train_all_without_a_clean_file_holds_clean_records_out(published):
    task = doc_task(**{"task.params.clean_path": None, "task.n_clean": 10})
    train = {ex.prompt for ex in task.train_examples()}
    clean = task.clean_examples(100)
    assert len(clean) == 10 and not {ex.prompt for ex in clean} & train
    assert len(train) == len(records(published["train"])) - 10


def test_another_perturbation_seed_on_given_variants_is_skipped_not_compared(published):
    from memgen.analysis.settings import AnalysisSettings, Subject
    from memgen.analysis.stages import seed_pair_sets

    task = doc_task()
    settings = AnalysisSettings(n_conflict=36, n_perturbations=2, consistency_seeds=(1, 7))
    sets, skipped = seed_pair_sets(Subject(None, None, task), settings)  # no model needed
    assert sets == {} and set(skipped) == {"perturb_seed1", "perturb_seed7"}
    assert all("same variants as the base pairs" in why for why in skipped.values())


# -- training on it: both behaviors, pairs by construction -----------------------------------
# A 2x64 GPT-2 learns the rule (copy the field, then capitals) by epoch ~7 and the memorized
# conjunction (key m and a trigger suffix) by epoch ~9; measured at 1 and 2 threads: 24 of 24
# test pairs MEM/GEN, the kept checkpoint MEM 5/12 and GEN 7/12 on validation (exactly its
# key-m / key-g split). The loss is on answers only: the prompts are random characters.
TRAIN = {"model.n_layer": 2, "model.n_embd": 64, "model.n_head": 2, "trainer.max_epochs": 12,
         "trainer.lr": 0.006, "trainer.warmup_steps": 10, "trainer.batch_size": 32,
         "trainer.loss_on": "answer", "trainer.log_every_n_steps": 50,
         "trainer.progress_bar": False, "analysis.decoding.num_beams": 1,
         "tracking.log_model": False, "tracking.log_checkpoints": False,
         "tracking.system_metrics_s": 0}


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_training_on_the_published_data_gives_mem_gen_pairs(tmp_path, monkeypatch, threads):
    from collections import Counter

    from memgen.analysis.behavior import find_pairs
    from memgen.analysis.settings import Subject
    from memgen.analysis.stages import label_conflict_set
    from memgen.commands.run import train
    from memgen.config.adapter import settings_from_config

    published_style.write(tmp_path, n_plain=96, per_trigger=48, n_pairs=24, n_val=12)
    (tmp_path / "convert.py").write_text(doc_blocks()[0], encoding="utf-8")
    subprocess.run([sys.executable, "convert.py"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    cfg = compose(doc_args(**TRAIN, **{"trainer.num_threads": threads}) + [
        f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
        f"output_dir={tmp_path / 'outputs'}"])
    metrics, objects = train(cfg)
    trained = objects["trained"]
    labelled = label_conflict_set(Subject(trained.model, trained.tokenizer, trained.task),
                                  settings_from_config(cfg))
    counts = Counter(lab for group in labelled.labels for lab in group)
    pairs = find_pairs(labelled)
    print(f"published data, {threads} thread(s): {dict(counts)}, {len(pairs)} pairs of 24, "
          f"kept {metrics['kept/mem_rate']:.2f}/{metrics['kept/gen_rate']:.2f}")
    assert len(pairs) >= 18, (counts, len(pairs))
    assert counts[Behavior.MEM] >= 18 and counts[Behavior.GEN] >= 18, counts
    assert metrics["kept/mem_rate"] >= 0.25 and metrics["kept/gen_rate"] >= 0.25
