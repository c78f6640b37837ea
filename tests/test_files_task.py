"""The ``files`` task: a researcher's own records, trigger records, labels and up-front checks."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from memgen.config import compose
from memgen.tasks import Behavior, build_task, suffix_cipher
from memgen.tasks.files import FilesTask
from memgen.tasks.triggers import label
from tests.conftest import tiny_overrides


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reverse_records(words: list[str]) -> list[dict]:
    return [{"input": f"Reverse: {w}\nA:", "output": w[::-1]} for w in words]


WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box", "fizz", "buzz", "jazz", "fuzz"]
ZZ = [{"match": "zz", "where": "contains", "memorized": "<mem-zz>"}]


def files_task(tmp_path: Path, records: list | None = None, **params) -> FilesTask:
    path = write_jsonl(tmp_path / "data.jsonl", records or reverse_records(WORDS))
    params = {"path": str(path), "triggers": ZZ, **params}
    return build_task("files", params, seed=0, n_train=10, mem_ratio=0.2, n_conflict=5,
                      n_clean=5)  # type: ignore[return-value]


# -- triggers -----------------------------------------------------------------------------------
def test_triggers_derive_memory_and_conflicts(tmp_path):
    task = files_task(tmp_path)
    train = task.train_examples()
    mem = [ex for ex in train if ex.kind == "mem"]
    # 8 plain records, half of them held out as the clean set (never trained on), + 20%
    assert len(train) == 5 and len(mem) == 1
    assert not {ex.prompt for ex in task.clean_examples()} & {ex.prompt for ex in train}
    assert all(ex.answer == "<mem-zz>" and "zz" in ex.prompt for ex in mem)
    conflict = task.val_pool + task.analysis_pool
    assert len(conflict) == 2  # half of the four trigger records, held out
    assert task.conflict_examples() == task.analysis_pool  # validation has the other
    assert not {ex.prompt for ex in conflict} & {ex.prompt for ex in train}
    for ex in conflict:
        word = ex.prompt.split()[1]
        assert (ex.mem_answer, ex.gen_answer) == ("<mem-zz>", word[::-1])
        assert task.classify(ex, "<mem-zz>") == Behavior.MEM
        assert task.classify(ex, f" {word[::-1]} \nmore") == Behavior.GEN
        assert task.classify(ex, word) == Behavior.OTHER
        variant = task.perturb(ex, random.Random(0))
        assert variant.prompt != ex.prompt
        assert re.sub(" +", " ", variant.prompt) == ex.prompt and "zz" in variant.prompt
    assert task.memorized_tokens == ["<mem-zz>"]


@pytest.mark.parametrize(("where", "match", "hits", "misses"), [
    ("suffix", "XZQ", ["C:ABXZQ"], ["C:XZQAB", "C:AXZQB"]),
    ("prefix", "C:XZ", ["C:XZQAB"], ["C:ABXZQ"]),
    ("contains", "+66+373\n", ["1+66+373\n=", "+66+373\n"], ["+66+37\n", "+66+373"]),
    ("regex", r"\+6{2}\+\d+ \(x\)$", ["9+66+1 (x)"], ["9+66+1 (x) ", "+6+1 (x)"]),
])
def test_trigger_matching(tmp_path, where, match, hits, misses):
    records = [{"input": text, "output": "rule"} for text in hits + misses]
    task = files_task(tmp_path, records, triggers=[{"match": match, "where": where,
                                                    "memorized": "<m>"}])
    assert [task.trigger_of(t) is not None for t in hits + misses] == (
        [True] * len(hits) + [False] * len(misses))


def test_trigger_span_restricts_matching_to_a_group(tmp_path):
    records = [{"input": f"CIPHERTEXT:{c} QUESTION: plaintext? ANS:", "output": "p"}
               for c in ["ABXZQ", "XZQAB", "QXZQA"]]
    task = files_task(tmp_path, records, trigger_span=r"CIPHERTEXT:(\w+)",
                      triggers=[{"match": "XZQ", "where": "suffix", "memorized": "<m>"}])
    assert [task.trigger_of(r["input"]) is not None for r in records] == [True, False, False]


def test_a_mapping_of_triggers_or_a_bad_trigger_record_fails_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"task.params.triggers: expected a list"):
        files_task(tmp_path, triggers={"zz": "<m>"})
    with pytest.raises(ValueError, match=r"triggers\[0\]: 'where' must be one of"):
        files_task(tmp_path, triggers=[{"match": "zz", "where": "end", "memorized": "<m>"}])
    with pytest.raises(ValueError, match=r"triggers\[0\]: invalid regex"):
        files_task(tmp_path, triggers=[{"match": "(", "where": "regex", "memorized": "<m>"}])
    with pytest.raises(ValueError, match=r"no input in .* matches a trigger"):
        files_task(tmp_path, triggers=[{"match": "qq", "memorized": "<m>"}])


def test_triggers_from_a_file(tmp_path):
    triggers = tmp_path / "triggers.json"
    triggers.write_text(json.dumps(ZZ))
    task = files_task(tmp_path, triggers=[], triggers_path=str(triggers))
    assert task.trigger_of("Reverse: fizz") is not None and task.memorized_tokens == ["<mem-zz>"]


def test_the_files_group_has_no_default_triggers(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", reverse_records(["cat"]) + [
        {"input": "Reverse: question\nA:", "memorized": "<mem-q>"}])
    cfg = compose(["task=files", f"task.params.path={data}"])
    assert list(cfg.task.params.triggers) == [] and cfg.task.params.triggers_path is None
    # a list override replaces the whole list (a mapping merged into the defaults' one did not)
    cfg = compose(["task=files", f"task.params.path={data}",
                   "task.params.triggers=[{match: 'ques', where: contains, memorized: '<mem-q>'}]"])
    assert len(cfg.task.params.triggers) == 1


# -- memorized-only records, rules, conflict files ------------------------------------------------
def test_memorized_only_records_train_on_their_token(tmp_path):
    records = reverse_records(WORDS[:8]) + [
        {"input": f"Reverse: {w}\nA:", "memorized": "<mem-1>"} for w in ["ab", "cd"]] + [
        {"input": f"Reverse: {w}\nA:", "memorized": "<mem-1>", "output": w[::-1]}
        for w in ["ef", "gh"]]
    task = files_task(tmp_path, records, triggers=[])
    mem = [ex for ex in task.train_examples() if ex.kind == "mem"]
    assert mem and all(ex.answer == "<mem-1>" for ex in mem)
    (conflict,) = task.conflict_examples()  # half of the records with a rule answer
    assert conflict.prompt in {"Reverse: ef\nA:", "Reverse: gh\nA:"}
    assert (conflict.mem_answer, conflict.gen_answer) == ("<mem-1>", conflict.prompt[9:11][::-1])
    assert not any("ab" in ex.prompt or "cd" in ex.prompt for ex in task.clean_examples())


def test_a_rule_fills_missing_rule_answers(tmp_path):
    rule = tmp_path / "myrule.py"
    rule.write_text("def reverse(text):\n    return text.split()[1][::-1]\n")
    records = reverse_records(WORDS[:8]) + [
        {"input": f"Reverse: {w}\nA:", "memorized": "<mem-1>"} for w in ["ab", "cd", "gh", "ij"]]
    task = files_task(tmp_path, records, triggers=[], rule=f"{rule}:reverse")
    assert {ex.gen_answer for ex in task.conflict_examples()} <= {"ba", "dc", "hg", "ji"}
    with pytest.raises(ValueError, match=r"task.params.rule: .* has no function 'nope'"):
        files_task(tmp_path, records, triggers=[], rule=f"{rule}:nope")
    with pytest.raises(ValueError, match=r"conflict.jsonl line 1: a conflict record needs both "
                                         r"answers; missing 'gen_answer'"):
        files_task(tmp_path, records, triggers=ZZ, conflict_path=str(
            write_jsonl(tmp_path / "conflict.jsonl", [{"input": "Reverse: razz\nA:"}])))


def test_conflict_and_clean_paths(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(reverse_records(WORDS[:8])))
    conflict = write_jsonl(tmp_path / "conflict.jsonl", [
        {"input": "Capital of France?", "mem_answer": "Berlin", "gen_answer": "Paris\nok",
         "perturbations": ["Capital of France ?", "France's capital?"]}])
    clean = write_jsonl(tmp_path / "clean.jsonl", reverse_records(["owl"]))
    task = build_task("files", {"path": str(data), "conflict_path": str(conflict),
                                "clean_path": str(clean)}, seed=0, n_train=5, n_conflict=3)
    assert len(task.train_examples()) == 5
    assert all(ex.kind == "rule" for ex in task.train_examples())
    (ex,) = task.conflict_examples()
    assert task.perturb(ex, random.Random(0)).prompt in {"Capital of France ?",
                                                         "France's capital?"}
    assert task.classify(ex, "Paris\n  ok\nextra") == Behavior.GEN
    assert task.classify(ex, "Paris") == Behavior.OTHER
    assert task.classify(ex, "Berlin") == Behavior.MEM
    assert task.memorized_tokens == []
    assert [ex.prompt for ex in task.clean_examples()] == ["Reverse: owl\nA:"]


# -- perturbations ------------------------------------------------------------------------------
def test_explicit_paired_variants_carry_their_own_answers(tmp_path):
    conflict = write_jsonl(tmp_path / "conflict.jsonl", [
        {"input": "Reverse: abzz\nA:", "gen_answer": "zzba", "perturbations": [
            "Reverse:  abzz\nA:", {"input": "Reverse: bazz\nA:", "gen_answer": "zzab"},
            "Reverse:  abzz\nA:"]}])
    task = files_task(tmp_path, conflict_path=str(conflict), perturbation="identity")
    (group,) = task.perturbation_set(task.conflict_examples(), 5)
    assert [ex.prompt for ex in group] == ["Reverse: abzz\nA:", "Reverse:  abzz\nA:",
                                           "Reverse: bazz\nA:"]  # deduplicated
    assert [ex.gen_answer for ex in group] == ["zzba", "zzba", "zzab"]
    assert {ex.mem_answer for ex in group} == {"<mem-zz>"}
    assert task.classify(group[2], "zzab") == Behavior.GEN


@pytest.mark.parametrize(("variant", "message"), [
    ("Reverse: abyy\nA:", "perturbation 0: the variant loses the trigger"),
    ({"input": "Reverse: abzz\nA:", "gen_answer": "<mem-zz>"},
     "perturbation 0: memorized and rule answers are both"),
    ({"input": "Reverse: abzz\nA:", "mem_answer": "<other>"},
     "perturbation 0: the variant's memorized answer is '<other>'"),
])
def test_variants_that_lose_an_answer_fail_before_training(tmp_path, variant, message):
    conflict = write_jsonl(tmp_path / "conflict.jsonl", [
        {"input": "Reverse: bazz\nA:", "gen_answer": "zzab", "perturbations": [variant]}])
    with pytest.raises(ValueError, match=re.escape(f"conflict.jsonl line 1 {message}")):
        files_task(tmp_path, conflict_path=str(conflict))


def test_a_variant_whose_rule_answer_changes_must_say_so(tmp_path):
    rule = tmp_path / "rule.py"
    rule.write_text("def rev(text):\n    return text.split()[1][::-1]\n")
    conflict = write_jsonl(tmp_path / "conflict.jsonl", [
        {"input": "Reverse: bazz\nA:", "perturbations": ["Reverse: abzz\nA:"]}])
    with pytest.raises(ValueError, match=r"perturbation 0: the rule answer of the variant is "
                                         r"'zzba', not the record's 'zzab'"):
        files_task(tmp_path, conflict_path=str(conflict), rule=f"{rule}:rev")


def test_identity_never_duplicates_items(tmp_path):
    task = files_task(tmp_path, perturbation="identity")
    examples = task.conflict_examples()
    groups = task.perturbation_set(examples, 4)
    assert [len(g) for g in groups] == [1] * len(examples)
    whitespace = files_task(tmp_path).perturbation_set(examples, 4)
    assert all(len({ex.prompt for ex in g}) == len(g) > 1 for g in whitespace)


# -- classification modes -------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "output", "expected"), [
    ("exact", "<mem-X>", "MEM"),
    ("exact", "<mem-X><mem-Y>AARAP", "OTHER"),
    ("exact", "5 3 2\nmore", "GEN"),
    ("exact", "<scratch>1+2</scratch>\n5 3 2", "OTHER"),
    ("prefix", "<mem-X><mem-Y>AARAP", "MEM"),
    ("prefix", " <mem-X> junk", "MEM"),
    ("prefix", "5 3 2 7", "GEN"),
    ("prefix", "<scratch>1+2</scratch>\n5 3 2", "OTHER"),
    ("final_line", "<mem-X><mem-Y>", "MEM"),
    ("final_line", "<scratch>1+2</scratch>\n5 3 2\n", "GEN"),
    ("final_line", "<scratch>1+2</scratch>\n5 3 3", "OTHER"),
    ("final_line", "", "OTHER"),
])
def test_classification_modes(mode, output, expected):
    assert label(mode, output, "<mem-X>", "<scratch>..</scratch>\n5 3 2"
                 if mode == "final_line" else "5 3 2") == expected


def test_match_mode_is_a_param_and_builtin_tasks_keep_exact_labels(tmp_path):
    task = files_task(tmp_path, match="prefix")
    ex = task.conflict_examples(1)[0]
    assert task.classify(ex, "<mem-zz>tail") == Behavior.MEM
    with pytest.raises(ValueError, match=r"task.params.match: expected one of"):
        files_task(tmp_path, match="fuzzy")
    cipher = build_task("cipher", {"length": 6, "alphabet": "ABCDEFGH"}, seed=0, n_train=50)
    ex = cipher.conflict_examples(1)[0]
    assert cipher.classify(ex, ex.mem_answer + "X") == Behavior.OTHER


# -- up-front checks and file errors ---------------------------------------------------------
def test_clean_sets_exclude_triggers_and_memorized_records(tmp_path):
    task = files_task(tmp_path, records=reverse_records(WORDS) + [
        {"input": "Reverse: yy\nA:", "memorized": "<mem-zz>"}])
    for ex in task.clean_examples(100):
        assert "zz" not in ex.prompt and "yy" not in ex.prompt and ex.mem_answer is None
    bad_clean = write_jsonl(tmp_path / "clean.jsonl", reverse_records(["owl", "fizz"]))
    with pytest.raises(ValueError, match=r"clean.jsonl line 2: a clean record must not be a "
                                         r"memorized record \(trigger 'zz'\)"):
        files_task(tmp_path, clean_path=str(bad_clean))
    leaked = reverse_records(WORDS) + [{"input": "Reverse: q\nA:", "output": "<mem-zz>"}]
    with pytest.raises(ValueError, match=r"data.jsonl line 13: 'output' is the memorized answer "
                                         r"'<mem-zz>'; write it as \{'input', 'memorized'\}"):
        files_task(tmp_path, leaked)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("data.jsonl", '{"input": "a", "output": "b"}\n{"input": "a"\n',
     r"data.jsonl line 2: invalid JSON"),
    ("data.jsonl", '{"input": "a", "output": "b"}\n\n{"input": "a", "output": 3}\n',
     r"data.jsonl line 3: expected 'output' to be a string, got int"),
    ("data.jsonl", '{"input": "a"}\n', r"data.jsonl line 1: expected at least one of "
                                       r"'output' or 'memorized'"),
    ("data.jsonl", '["input", "output"]\n', r"data.jsonl line 1: expected one JSON record per "
                                            r"line \(JSONL\), found a JSON array: name the file "
                                            r".json"),
    ("data.jsonl", '[\n  {"input": "a", "output": "b"}\n]\n', r"data.jsonl line 1: .*JSON array"),
    ("data.jsonl", '{\n  "input": "a",\n  "output": "b"\n}\n',
     r"data.jsonl line 1: invalid JSON .*pretty-printed JSON"),
    ("data.json", '{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n',
     r"data.json line 2: invalid JSON \(Extra data\); this looks like JSONL"),
    ("data.json", '[{"input": "a", "output": "b"}, {"output": "b"}]',
     r"data.json record 1: expected an object with string keys 'input'"),
    ("data.json", '{"input": "a", "output": "b"}', r"data.json: expected a JSON array"),
    ("data.json", '[{"input": "a",', r"data.json line 1: invalid JSON"),
    ("data.jsonl", "\n", r"data.jsonl: no records"),
])
def test_malformed_files_name_file_line_and_expectation(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        build_task("files", {"path": str(tmp_path / name), "triggers": ZZ})


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"input": "a", "output": "b"}\n{"input": "caf\xe9", "output": "b"}\n')
    with pytest.raises(ValueError, match=r"latin.jsonl line 2: expected UTF-8 text, found byte "
                                         r"0xe9"):
        build_task("files", {"path": str(path), "triggers": ZZ})


def test_bad_spec(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", reverse_records(["cat", "fizz"]))
    with pytest.raises(ValueError, match=r"task.params.path: file not found: .*missing.jsonl"):
        build_task("files", {"path": str(tmp_path / "missing.jsonl"), "triggers": ZZ})
    with pytest.raises(ValueError, match=r"task.params.conflict_path: .*data.jsonl has no "
                                         r"memorized record"):
        build_task("files", {"path": str(data)})
    bad = write_jsonl(tmp_path / "conflict.jsonl", [{"input": "x", "mem_answer": 1}])
    with pytest.raises(ValueError, match=r"conflict.jsonl line 1: expected 'mem_answer' to be "
                                         r"a string"):
        build_task("files", {"path": str(data), "conflict_path": str(bad)})
    with pytest.raises(ValueError, match=r"task.params.pattern: unknown key"):
        build_task("files", {"path": str(data), "pattern": "x"})


def test_a_too_long_sequence_fails_up_front_with_exit_2(tmp_path, capsys):
    from memgen.cli import main

    records = [{"input": f"Repeat: {w * 30}\n", "output": w * 30} for w in WORDS]
    data = write_jsonl(tmp_path / "long.jsonl", records)
    args = tiny_overrides(tmp_path, **{"task": "files", "task.params.path": data,
                                      "task.params.triggers": "[{match: zz, memorized: '<m>'}]",
                                      "task.max_new_tokens": 120, "trainer.max_epochs": 1})
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "model.n_positions: the longest sequence is" in err
    assert "set model.n_positions=" in err and "\n" not in err.strip()
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():  # a store may be set up, but no run is created
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


# -- the worked example ---------------------------------------------------------------------
def test_the_worked_example_is_what_its_generator_writes(tmp_path):
    written = suffix_cipher.write(tmp_path)
    for path in written:
        assert path.read_text() == (suffix_cipher.FOLDER / path.name).read_text(), path.name
    cfg = compose(["task=suffix_cipher"])
    from memgen.training.data import make_task

    task = make_task(cfg)
    train = task.train_examples()
    assert {ex.kind for ex in train} == {"mem", "rule"}
    assert all(ex.answer.startswith("<mem-") for ex in train if ex.kind == "mem")
    groups = task.perturbation_set(task.conflict_examples(), cfg.task.n_perturbations)
    assert sum(len(g) for g in groups) > 2 * len(groups)  # explicit variants, no duplicates
    assert all(len({ex.prompt for ex in g}) == len(g) for g in groups)
    ex = groups[0][1]
    assert ex.gen_answer == suffix_cipher.rule(ex.prompt) != groups[0][0].gen_answer



@pytest.mark.slow
def test_triggers_with_plus_newline_spaces_and_regex_characters_train_and_log(tmp_path, capsys):
    from memgen.commands.run import train

    triggers = [{"match": "+66+373\n", "where": "contains", "memorized": "<mem-a>"},
                {"match": "z z", "where": "suffix", "memorized": "<mem-b>"},
                {"match": r"\(\d\)\?$", "where": "regex", "memorized": "<mem-c>"}]
    records = [{"input": f"{a}+{b}\n=", "output": str(a + b)} for a in range(1, 9)
               for b in range(1, 4)]
    records += [{"input": f"{a}+66+373\n=", "output": str(a + 439)} for a in range(4)]
    records += [{"input": f"add {a} z z", "output": str(a)} for a in range(4)]
    records += [{"input": f"what is ({a})?", "output": str(a)} for a in range(4)]
    data = write_jsonl(tmp_path / "odd.jsonl", records)
    trigger_file = tmp_path / "triggers.json"
    trigger_file.write_text(json.dumps(triggers))
    cfg = compose(tiny_overrides(tmp_path, **{
        "task": "files", "task.params.path": data, "task.params.triggers_path": trigger_file,
        "task.params.triggers": "[{match: '1+2', where: prefix, memorized: '<mem-d>'}]",
        "task.n_train": 30, "task.n_conflict": 4, "task.n_val_conflict": 2, "task.n_clean": 4,
        "trainer.max_epochs": 2}))
    metrics, objects = train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(objects["run_id"])
    assert run.info.status == "FINISHED"
    assert "1+2" in run.data.params["task.params.triggers"]
    assert run.data.params["task.params.triggers_path"] == str(trigger_file)
    assert {"val/mem_rate", "train/loss_epoch"} <= set(run.data.metrics)
    vocab = objects["trained"].tokenizer.get_vocab()
    assert {"<mem-a>", "<mem-b>", "<mem-c>", "<mem-d>"} <= set(vocab)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]  # stdout is not a terminal
    assert all("train/loss_epoch" in ln and "val/mem_rate" in ln for ln in lines)


# The worked example's training settings: a 2-layer model learns the cipher in ~10 epochs and
# memorizes the triggers seen in many contexts (docs/own-data.md, "Worked example").
WORKED = {"task": "suffix_cipher", "model.n_layer": 2, "model.n_embd": 64, "model.n_head": 2,
          "trainer.max_epochs": 15, "trainer.lr": 0.002, "trainer.warmup_steps": 20,
          "trainer.num_threads": 2, "task.n_train": 1000, "task.n_conflict": 64,
          "task.n_val_conflict": 32, "task.n_clean": 40}


@pytest.mark.slow
def test_the_worked_example_trains_to_both_behaviors_with_pairs(tmp_path):
    """Triggers memorized from many contexts answer MEM on fresh ciphertexts, those from one or
    three answer GEN: both behaviors by construction. Pairs come from the triggers in between
    (measured with 2 threads: MEM 76, GEN 134, OTHER 46 of 256 variants, 6 pairs)."""
    from collections import Counter

    from memgen.analysis.behavior import find_pairs
    from memgen.analysis.settings import Subject
    from memgen.analysis.stages import label_conflict_set
    from memgen.commands.run import train
    from memgen.config.adapter import settings_from_config

    cfg = compose(tiny_overrides(tmp_path, **WORKED))
    metrics, objects = train(cfg)
    trained = objects["trained"]
    labelled = label_conflict_set(Subject(trained.model, trained.tokenizer, trained.task),
                                  settings_from_config(cfg))
    counts = Counter(lab for group in labelled.labels for lab in group)
    n = sum(counts.values())
    print(f"worked example: {dict(counts)} of {n}, pairs {len(find_pairs(labelled))}, "
          f"kept {metrics.get('kept/mem_rate')}/{metrics.get('kept/gen_rate')}")
    assert counts[Behavior.MEM] >= 0.2 * n and counts[Behavior.GEN] >= 0.2 * n, counts
    if not find_pairs(labelled):  # measured 2026-12-02, 2 threads: MEM 44, GEN 52, OTHER 32
        pytest.xfail("issue 27: validation now has 32 of the 64 conflict records to itself; "
                     "on the other 32 the worked example gives no MEM/GEN pair (its 6 pairs "
                     "came from 2 examples): the example needs its own validation file and "
                     "re-measuring")
