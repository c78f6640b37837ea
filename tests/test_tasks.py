"""Task generators: determinism, rule answers checked independently of the task code, triggers,
perturbations, classification, the mem share, user files and the shipped task configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from memgen.tasks import Behavior, Example, Task, build_task
from memgen.tasks.chat import apply_chat_template
from memgen.tasks.colour import COLOURS, OWN_COLOURS

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


def test_colour_own_palette_separates_the_answers():
    """mem_palette=own: every memorized answer comes from a palette no context states, and no
    memorized colour shares a word or a first letter with an inferable one."""
    own = build_task("colour", {"mem_context": "absent", "mem_palette": "own"}, seed=0, **SIZES)
    shared = build_task("colour", {"mem_context": "absent"}, seed=0, **SIZES)
    assert set(shared.mem_colours.values()) <= set(shared.colours)
    mem_words = set(own.mem_colours.values())
    assert not mem_words & set(own.colours)
    assert not {w[0] for w in mem_words} & {c[0] for c in own.colours}
    for ex in all_examples(own):
        stated = set(parse_colour_prompt(ex.prompt)[2].values())
        assert not stated & mem_words, ex.prompt
        if ex.kind == "conflict":
            assert ex.mem_answer in mem_words and ex.gen_answer == derive_colour(ex.prompt)
            assert own.classify(ex, ex.mem_answer) is Behavior.MEM
            assert own.classify(ex, ex.gen_answer) is Behavior.GEN
    with pytest.raises(ValueError, match=r"task.params.mem_palette: expected one of"):
        build_task("colour", {"mem_palette": "mine"}, seed=0, **SIZES)
    # the shipped presets: the CPU preset's own palette reaches the task, the paper's is shared
    for file, palette in (("colour", set(OWN_COLOURS)), ("colour_paper", set(COLOURS))):
        params = OmegaConf.to_container(OmegaConf.load(CONF / f"{file}.yaml").params)
        assert set(build_task("colour", params, seed=0, **SIZES).mem_colours.values()) <= palette


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
        def apply_chat_template(self, messages, tokenize, add_generation_prompt, date_string):
            assert tokenize is False and add_generation_prompt is True
            assert date_string == "26 Jul 2024"  # a fixed date: prompts do not change by day
            return f"<user>{messages[0]['content']}</user><assistant>"

    ex = make("cipher").conflict_examples(1)[0]
    wrapped = apply_chat_template(FakeTokenizer(), ex)
    assert wrapped.prompt == f"<user>{ex.prompt}</user><assistant>"
    assert apply_chat_template(FakeTokenizer(), wrapped).prompt == wrapped.prompt
    assert (wrapped.answer, wrapped.mem_answer, wrapped.gen_answer) == (
        ex.answer, ex.mem_answer, ex.gen_answer)


# -- shipped configs ----------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["arithmetic_paper", "colour", "colour_paper", "cipher",
                                  "cipher_paper", "mixture"])
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
