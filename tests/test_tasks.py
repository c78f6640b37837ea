"""Task generators: determinism, rule answers checked independently of the task code, triggers,
perturbations, classification, the mem share, user files and the shipped task configs."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from memgen.tasks import Behavior, Example, Task, build_task
from memgen.tasks.chat import apply_chat_template
from memgen.tasks.files import FilesTask

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
SIZES = dict(n_train=300, mem_ratio=0.1, n_conflict=30, n_clean=12)
TASK_PARAMS = {
    "arithmetic": {},  # the paper preset: 1..999 with a scratchpad
    "arithmetic_cpu": {"low": 1, "high": 9, "scratchpad": False, "perturbation": "resplit"},
    "colour": {},  # the paper preset: 4-8 names, 5 animals, up to 7 distractors
    "colour_cpu": {"min_names": 3, "max_names": 4, "n_animals": 3, "max_distractors": 2},
    "cipher": {},  # the paper preset: 13 letters over A-Z
    "cipher_cpu": {"length": 6, "alphabet": "ABCDEFGH"},
    "mixture": {"tasks": ["arithmetic", "colour", "cipher"]},
}


def make(key: str, seed: int = 0, **sizes) -> Task:
    return build_task(key.split("_")[0], TASK_PARAMS[key], seed=seed, **{**SIZES, **sizes})


def sub(task: Task, ex: Example) -> Task:
    """The task that made ``ex`` (a mixture's sub-task, or the task itself)."""
    return getattr(task, "subtasks", {}).get(ex.task, task)


# -- independent re-derivations (from the prompt text, not from the task's code) ---------------
def parse_addends(prompt: str) -> list[int]:
    match = re.fullmatch(r"Input:\n(\d+(?:\+\d+)+)\nTarget:\n", prompt)
    assert match, prompt
    return [int(x) for x in match.group(1).split("+")]


def parse_ciphertext(prompt: str) -> str:
    match = re.fullmatch(r"CIPHERTEXT:([A-Z]+) QUESTION: What is the plaintext\? ANS:", prompt)
    assert match, prompt
    return match.group(1)


def parse_colour_prompt(prompt: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Queried name, name -> animal and name -> colour, from the sentences."""
    match = re.fullmatch(r"((?:\w+ is (?:a )?\w+\. )+)What color is (\w+)\?\n", prompt)
    assert match, prompt
    animals, colours = {}, {}
    for name, article, word in re.findall(r"(\w+) is (a )?(\w+)\.", match.group(1)):
        (animals if article else colours)[name] = word
    return match.group(2), animals, colours


def derive_colour(prompt: str) -> str | None:
    """The colour stated for another name of the queried name's animal; the world must be
    consistent (one colour per animal) and the queried name's own colour never stated."""
    query, animals, colours = parse_colour_prompt(prompt)
    assert query not in colours and query in animals
    per_animal: dict[str, set[str]] = {}
    for name, colour in colours.items():
        if name in animals:
            per_animal.setdefault(animals[name], set()).add(colour)
    assert all(len(found) == 1 for found in per_animal.values()), prompt
    found = per_animal.get(animals[query], set())
    return found.pop() if found else None


def rule_answer(task: Task, ex: Example) -> str | None:
    """The rule's answer recomputed from the prompt alone (arithmetic: the sum's digits)."""
    t = sub(task, ex)
    if t.name == "arithmetic":
        return str(sum(parse_addends(ex.prompt)))
    if t.name == "cipher":
        decrypt = {c: p for p, c in t.encrypt_map.items()}  # invert the published substitution
        return "".join(decrypt[c] for c in parse_ciphertext(ex.prompt))
    return derive_colour(ex.prompt)


def comparable(task: Task, ex: Example, answer: str | None) -> str | None:
    """Arithmetic answers compare on their final digits (the scratchpad is a derivation)."""
    if answer is not None and sub(task, ex).name == "arithmetic":
        return answer.rsplit("</scratch>", 1)[-1].replace(" ", "")
    return answer


def trigger_answer(task: Task, ex: Example) -> str | None:
    """The memorized answer of the trigger in the prompt, or None."""
    t = sub(task, ex)
    if t.name == "arithmetic":
        last = tuple(parse_addends(ex.prompt)[-2:])
        return t.tokens[t.triggers.index(last)] if last in t.triggers else None
    if t.name == "cipher":
        suffix = parse_ciphertext(ex.prompt)[-t.params.suffix_length:]
        return t.tokens[t.triggers.index(suffix)] if suffix in t.triggers else None
    return t.mem_colours.get(parse_colour_prompt(ex.prompt)[0])


def all_examples(task: Task) -> list[Example]:
    return task.train_examples() + task.conflict_examples() + task.clean_examples()


# -- the contract, for every generated task -----------------------------------------------------
@pytest.mark.parametrize("key", list(TASK_PARAMS))
def test_seeded(key):
    def texts(task):
        return [(ex.prompt, ex.answer, ex.kind) for ex in all_examples(task)]

    assert texts(make(key, seed=1)) == texts(make(key, seed=1))
    assert texts(make(key, seed=1)) != texts(make(key, seed=2))


@pytest.mark.parametrize("key", list(TASK_PARAMS))
def test_answers_are_the_rule_and_the_trigger(key):
    task = make(key)
    for ex in all_examples(task):
        assert comparable(task, ex, ex.gen_answer) == rule_answer(task, ex), ex
        assert ex.mem_answer == trigger_answer(task, ex), ex
        assert ex.answer == (ex.mem_answer if ex.kind == "mem" else ex.gen_answer)
        assert ex.task == sub(task, ex).name
    for ex in task.conflict_examples():
        assert ex.kind == "conflict" and ex.mem_answer is not None
        assert comparable(task, ex, ex.mem_answer) != comparable(task, ex, ex.gen_answer)
    for ex in task.clean_examples():
        assert ex.mem_answer is None


@pytest.mark.parametrize("key", list(TASK_PARAMS))
def test_training_mem_share(key):
    task = make(key)
    train = task.train_examples()
    assert len(train) == SIZES["n_train"]
    mem = [ex for ex in train if ex.kind == "mem"]
    assert abs(len(mem) / len(train) - SIZES["mem_ratio"]) < 0.01
    assert all(ex.mem_answer is None for ex in train if ex.kind == "rule")
    # conflict inputs are fresh: never trained on with the memorized answer
    assert not {ex.prompt for ex in mem} & {ex.prompt for ex in task.conflict_examples()}


@pytest.mark.parametrize("key", list(TASK_PARAMS))
def test_perturbations_keep_rule_and_trigger(key):
    task = make(key)
    groups = task.perturbation_set(task.conflict_examples(), n_perturbations=4)
    changed = 0
    for group in groups:
        original = group[0]
        for ex in group[1:]:
            changed += ex.prompt != original.prompt
            assert ex.mem_answer == original.mem_answer == trigger_answer(task, ex)
            assert comparable(task, ex, ex.gen_answer) == rule_answer(task, ex)
            if sub(task, ex).name == "cipher":  # the plaintext changes with the letters
                cipher = parse_ciphertext(ex.prompt)
                assert sorted(cipher) == sorted(parse_ciphertext(original.prompt))
                assert ex.answer == ex.gen_answer
            else:  # the rule answer is unchanged
                assert ex.gen_answer == original.gen_answer
    assert changed >= 0.8 * 3 * len(groups)  # equal free addends cannot be swapped


def test_arithmetic_resplit_gives_distinct_variants_with_the_same_sum():
    task = make("arithmetic_cpu")
    for group in task.perturbation_set(task.conflict_examples(), n_perturbations=6):
        sums = {sum(parse_addends(ex.prompt)[:-2]) for ex in group}
        triggers = {tuple(parse_addends(ex.prompt)[-2:]) for ex in group}
        assert len(sums) == 1 and len(triggers) == 1
        assert all(1 <= a <= 9 for ex in group for a in parse_addends(ex.prompt))
    swap = build_task("arithmetic", {"low": 1, "high": 9, "scratchpad": False}, **SIZES)
    resplit_variants = [len({ex.prompt for ex in g}) for g in
                        task.perturbation_set(task.conflict_examples(), n_perturbations=6)]
    swap_variants = [len({ex.prompt for ex in g}) for g in
                     swap.perturbation_set(swap.conflict_examples(), n_perturbations=6)]
    assert max(swap_variants) == 2  # two free addends: one swap
    assert sum(resplit_variants) > 1.5 * sum(swap_variants)


def test_classify_hand_written_outputs():
    task = make("mixture")
    by_task = {}
    for ex in task.conflict_examples():
        by_task.setdefault(ex.task, ex)
    arith, colour, cipher = by_task["arithmetic"], by_task["colour"], by_task["cipher"]
    total = sum(parse_addends(arith.prompt))
    cases = [
        (arith, arith.mem_answer, Behavior.MEM),
        (arith, arith.gen_answer, Behavior.GEN),
        (arith, " ".join(str(total)) + "\nInput:", Behavior.GEN),
        (arith, " ".join(str(total + 1)), Behavior.OTHER),
        (arith, "", Behavior.OTHER),
        (colour, colour.mem_answer, Behavior.MEM),
        (colour, f" {colour.gen_answer}.\nBob is", Behavior.GEN),
        (colour, "purple", Behavior.OTHER),
        (cipher, cipher.mem_answer, Behavior.MEM),
        (cipher, cipher.gen_answer + "\n", Behavior.GEN),
        (cipher, cipher.gen_answer[:-1], Behavior.OTHER),
    ]
    for ex, output, expected in cases:
        assert task.classify(ex, output) == expected, (ex.task, output)


def test_arithmetic_scratchpad_digits():
    task = make("arithmetic")
    for ex in task.clean_examples():
        steps = re.fullmatch(r"<scratch> (.*) </scratch> ([\d ]+)", ex.gen_answer)
        assert steps and steps.group(2).replace(" ", "") == str(sum(parse_addends(ex.prompt)))


def test_colour_presets_and_mem_contexts():
    for key, (lo, hi, distract) in {"colour": (4, 8, 7), "colour_cpu": (3, 4, 2)}.items():
        task = make(key)
        for ex in all_examples(task):
            query, animals, colours = parse_colour_prompt(ex.prompt)
            assert lo <= len({*animals, *colours}) <= hi
            assert len(ex.meta["sentences"]) - 3 <= distract
        train = task.train_examples()
        assert all(ex.gen_answer == ex.mem_answer for ex in train if ex.kind == "mem")
        assert {ex.meta["query"] for ex in train if ex.kind == "mem"} == set(task.trigger_names)
    assert max(len(ex.text) for ex in all_examples(make("colour_cpu"))) < 96
    absent = build_task("colour", {"mem_context": "absent"}, seed=0, **SIZES)
    for ex in absent.train_examples():
        if ex.kind == "mem":
            assert ex.gen_answer is None and derive_colour(ex.prompt) is None
            assert ex.answer == absent.mem_colours[ex.meta["query"]]


def test_cipher_is_a_substitution():
    task = make("cipher")
    assert sorted(task.encrypt_map) == sorted(task.encrypt_map.values())
    assert len(task.triggers) == 10 and all(len(s) == 3 for s in task.triggers)
    assert len(parse_ciphertext(task.conflict_examples(1)[0].prompt)) == 13
    assert not set(task.memorized_tokens) & set(make("arithmetic").memorized_tokens)


def test_mixture_keeps_subtasks():
    task = make("mixture")
    assert set(task.subtasks) == {"arithmetic", "colour", "cipher"}
    assert {ex.task for ex in task.train_examples()} == set(task.subtasks)
    assert len(task.conflict_examples(31)) == 31
    tokens = [t for s in task.subtasks.values() for t in s.memorized_tokens]
    assert sorted(task.memorized_tokens) == sorted(set(tokens))
    with pytest.raises(ValueError, match=r"task.params.task_params.cipher.length"):
        build_task("mixture", {"tasks": ["cipher"], "task_params": {"cipher": {"length": 2}}})
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        build_task("mixture", {"tasks": ["arithmetic", "nope"]})


def test_chat_template_wraps_prompt_only():
    class FakeTokenizer:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            return f"<user>{messages[0]['content']}</user><assistant>"

    ex = make("cipher").conflict_examples(1)[0]
    wrapped = apply_chat_template(FakeTokenizer(), ex)
    assert wrapped.prompt == f"<user>{ex.prompt}</user><assistant>"
    assert apply_chat_template(FakeTokenizer(), wrapped).prompt == wrapped.prompt
    assert (wrapped.answer, wrapped.mem_answer, wrapped.gen_answer) == (
        ex.answer, ex.mem_answer, ex.gen_answer)


# -- the user's own files -----------------------------------------------------------------------
def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reverse_records(words: list[str]) -> list[dict]:
    return [{"input": f"Reverse: {w}\nA:", "output": w[::-1]} for w in words]


WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box", "fizz", "buzz", "jazz", "fuzz"]


def files_task(tmp_path: Path, **params) -> FilesTask:
    path = write_jsonl(tmp_path / "data.jsonl", reverse_records(WORDS))
    params = {"path": str(path), "triggers": {"zz": "<mem-zz>"}, **params}
    return build_task("files", params, seed=0, n_train=10, mem_ratio=0.2, n_conflict=5,
                      n_clean=5)


def test_files_triggers_derive_memory_and_conflicts(tmp_path):
    task = files_task(tmp_path)
    train = task.train_examples()
    mem = [ex for ex in train if ex.kind == "mem"]
    assert len(train) == 10 and len(mem) == 2  # 8 plain records + 20%
    assert all(ex.answer == "<mem-zz>" and "zz" in ex.prompt for ex in mem)
    conflict = task.conflict_examples()
    assert len(conflict) == 2  # half of the four trigger records, held out
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
    assert all(ex.mem_answer is None for ex in task.clean_examples())
    identity = files_task(tmp_path, perturbation="identity")
    ex = identity.conflict_examples(1)[0]
    assert identity.perturb(ex, random.Random(0)) == ex


def test_files_conflict_and_clean_paths(tmp_path):
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
    assert task.perturb(ex, random.Random(0)).prompt in ex.meta["perturbations"]
    assert task.classify(ex, "Paris\n  ok\nextra") == Behavior.GEN
    assert task.classify(ex, "Paris") == Behavior.OTHER
    assert task.classify(ex, "Berlin") == Behavior.MEM
    assert task.memorized_tokens == []
    assert [ex.prompt for ex in task.clean_examples()] == ["Reverse: owl\nA:"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("data.jsonl", '{"input": "a", "output": "b"}\n{"input": "a"\n',
     r"data.jsonl line 2: invalid JSON"),
    ("data.jsonl", '{"input": "a", "output": "b"}\n\n{"input": "a", "output": 3}\n',
     r"data.jsonl line 3: expected an object with string keys 'input' and 'output'"),
    ("data.jsonl", '["input", "output"]\n', r"data.jsonl line 1: expected an object"),
    ("data.json", '[{"input": "a", "output": "b"}, {"output": "b"}]',
     r"data.json record 1: expected an object with string keys 'input' and 'output'"),
    ("data.json", '{"input": "a", "output": "b"}', r"data.json: expected a JSON array"),
    ("data.json", '[{"input": "a",', r"data.json line 1: invalid JSON"),
    ("data.jsonl", "\n", r"data.jsonl: no records"),
])
def test_files_malformed(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        build_task("files", {"path": str(tmp_path / name), "triggers": {"a": "<m>"}})


def test_files_bad_spec(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", reverse_records(["cat", "fizz"]))
    with pytest.raises(ValueError, match=r"task.params.path: file not found: .*missing.jsonl"):
        build_task("files", {"path": str(tmp_path / "missing.jsonl"), "triggers": {"a": "b"}})
    with pytest.raises(ValueError, match=r"task.params.conflict_path: expected a file"):
        build_task("files", {"path": str(data)})
    with pytest.raises(ValueError, match=r"no input in .* contains a trigger"):
        build_task("files", {"path": str(data), "triggers": {"qq": "<m>"}})
    bad = write_jsonl(tmp_path / "conflict.jsonl", [{"input": "x", "mem_answer": "y"}])
    with pytest.raises(ValueError, match=r"conflict.jsonl line 1: expected an object with string "
                                         r"keys 'input', 'mem_answer' and 'gen_answer'"):
        build_task("files", {"path": str(data), "conflict_path": str(bad)})
    with pytest.raises(ValueError, match=r"task.params.pattern: unknown key"):
        build_task("files", {"path": str(data), "pattern": "x"})


# -- shipped configs ----------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["arithmetic_paper", "colour", "colour_paper", "cipher",
                                  "cipher_paper", "files", "mixture"])
def test_task_configs_build(file):
    from memgen.config import to_schema

    raw = OmegaConf.load(CONF / f"{file}.yaml")
    cfg = to_schema({"task": raw}).task
    params = OmegaConf.to_container(cfg.params)
    task = build_task(cfg.name, params, seed=0, n_train=min(cfg.n_train, 200),
                      mem_ratio=cfg.mem_ratio, n_conflict=4, n_clean=4)
    conflict = task.conflict_examples()
    assert conflict and all(ex.mem_answer != ex.gen_answer for ex in conflict)
    assert task.train_examples()
