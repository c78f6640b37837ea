"""Multi-operand addition with memorized trigger pairs (the paper's arithmetic task).

Rule: ``Input:\\n12+7+30+5\\nTarget:\\n`` -> the sum (optionally after a digit-by-digit
scratchpad). Triggers: fixed pairs of addends; when a trigger pair stands as the last two addends
in training, the target is that trigger's memorized token instead of the sum.

``memorize=record`` (not the paper's) memorizes one whole *record* per trigger instead: fixed
free addends followed by the trigger pair, always the same input. A share of the rule examples
(``trigger_rule_share``) ends in a trigger pair after other free addends, so the trigger alone
does not decide. Conflict examples are near-misses of a record: ``graded`` perturbation keeps
the trigger pair and replaces 1..n_free of the record's free addends (at random positions, with
other values), so the variants of one example span strengths from "almost the record" to "only
the trigger". The sum changes with the addends (each variant's rule answer is its own). Which
behavior a variant gets depends on how much of *its trigger's* record it matches: an
interaction of trigger and free addends, which tokens taken one by one (the input-only probe)
do not tell, whereas the pair design's behavior follows single addend values.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from memgen.tasks.base import Behavior, Example, Task, normalize_output
from memgen.tasks.registry import register


@dataclass
class ArithmeticParams:
    """Task-specific options (``task.params.*``)."""

    n_addends: int = 4
    low: int = 1
    high: int = 999
    n_triggers: int = 10
    scratchpad: bool = True
    perturbation: str = "swap"  # swap (the paper's) | resplit | graded (memorize=record)
    memorize: str = "pair"  # pair (the paper's: any free addends) | record (one input each)
    trigger_rule_share: float = 0.0  # rule examples that end in a trigger pair

    def validate(self) -> None:
        if self.perturbation not in ("swap", "resplit", "graded"):
            raise ValueError(f"task.params.perturbation: expected 'swap', 'resplit' or "
                             f"'graded', got {self.perturbation!r}")
        if self.memorize not in ("pair", "record"):
            raise ValueError(f"task.params.memorize: expected 'pair' or 'record', "
                             f"got {self.memorize!r}")
        if (self.perturbation == "graded") != (self.memorize == "record"):
            raise ValueError("task.params.perturbation: expected 'graded' exactly when "
                             "task.params.memorize=record (a near-miss needs a record)")
        if not 0 <= self.trigger_rule_share < 1:
            raise ValueError("task.params.trigger_rule_share: expected a fraction in [0, 1)")
        if self.n_addends < 4:
            raise ValueError(
                "task.params.n_addends: expected >= 4 (two free addends + a trigger pair)")
        if not 0 <= self.low < self.high:
            raise ValueError("task.params.low/high: expected 0 <= low < high")
        if not 1 <= self.n_triggers <= (self.high - self.low + 1) ** 2 // 4:
            raise ValueError("task.params.n_triggers: expected 1..(number of addend pairs)/4")


def memorized_token(seed: int, index: int) -> str:
    """A stable, opaque memorized answer such as ``<mem-1ee18056>``."""
    digest = hashlib.sha256(f"memgen:{seed}:{index}".encode()).hexdigest()[:8]
    return f"<mem-{digest}>"


def scratchpad_answer(addends: list[int]) -> str:
    """Column-wise sums with carries, then the sum's digits separated by spaces."""
    width = max(len(str(a)) for a in addends)
    digits = [str(a).zfill(width) for a in addends]
    carry, steps = 0, []
    for col in range(width - 1, -1, -1):
        column = [int(d[col]) for d in digits]
        total = sum(column) + carry
        steps.append("+".join(map(str, column)) + f"+{carry}={total}")
        carry = total // 10
    return f"<scratch> {' '.join(steps)} </scratch> " + " ".join(str(sum(addends)))


@register("arithmetic")
class ArithmeticTask(Task):
    name = "arithmetic"
    Params = ArithmeticParams

    def __init__(self, params: ArithmeticParams | None = None, **common) -> None:
        super().__init__(**common)
        self.params = params or ArithmeticParams()
        self.params.validate()
        rng = self.rng("triggers")
        pairs: set[tuple[int, int]] = set()
        while len(pairs) < self.params.n_triggers:
            pairs.add((rng.randint(self.params.low, self.params.high),
                       rng.randint(self.params.low, self.params.high)))
        self.triggers: list[tuple[int, int]] = sorted(pairs)
        self.tokens = [memorized_token(self.seed, i) for i in range(len(self.triggers))]
        self._mem_prefixes: set[tuple[int, ...]] = set()
        n_free = self.params.n_addends - 2
        records = self.rng("records")  # drawn only with memorize=record: other streams unchanged
        self.records: list[list[int]] = ([self._draw(records, n_free) for _ in self.triggers]
                                         if self.params.memorize == "record" else [])

    @property
    def memorized_tokens(self) -> list[str]:
        return list(self.tokens)

    # -- formatting -------------------------------------------------------------------------
    @staticmethod
    def prompt(addends: list[int]) -> str:
        return "Input:\n" + "+".join(map(str, addends)) + "\nTarget:\n"

    def rule_answer(self, addends: list[int]) -> str:
        return scratchpad_answer(addends) if self.params.scratchpad else str(sum(addends))

    def _draw(self, rng: random.Random, k: int) -> list[int]:
        return [rng.randint(self.params.low, self.params.high) for _ in range(k)]

    def _example(self, addends: list[int], kind: str) -> Example:
        last = tuple(addends[-2:])
        trigger = self.triggers.index(last) if last in self.triggers else None
        gen = self.rule_answer(addends)
        mem = self.tokens[trigger] if trigger is not None else None
        answer = mem if kind == "mem" and mem is not None else gen
        return Example(prompt=self.prompt(addends), answer=answer, kind=kind, task=self.name,
                       mem_answer=mem, gen_answer=gen,
                       meta={"addends": list(addends), "trigger": trigger})

    # -- generators -------------------------------------------------------------------------
    def train_examples(self) -> list[Example]:
        rng = self.rng("train")
        n_free = self.params.n_addends - 2
        n_mem = round(self._train_size() * self.mem_ratio)
        examples: list[Example] = []
        for i in range(n_mem):
            trigger = self.triggers[i % len(self.triggers)]
            free = (list(self.records[i % len(self.triggers)]) if self.records
                    else self._draw(rng, n_free))
            self._mem_prefixes.add((*free, *trigger))
            examples.append(self._example(free + list(trigger), "mem"))
        n_trigger_rule = round((self._train_size() - n_mem) * self.params.trigger_rule_share)
        while len(examples) < n_mem + n_trigger_rule:  # the trigger after other free addends
            trigger = self.triggers[len(examples) % len(self.triggers)]
            addends = self._draw(rng, n_free) + list(trigger)
            if tuple(addends) not in self._mem_prefixes:
                examples.append(self._example(addends, "rule"))
        while len(examples) < self._train_size():
            addends = self._draw(rng, self.params.n_addends)
            if tuple(addends[-2:]) not in self.triggers:
                examples.append(self._example(addends, "rule"))
        rng.shuffle(examples)
        return examples

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        rng = self.rng(stream)
        n = self.n_conflict if n is None else n
        n_free = self.params.n_addends - 2
        examples: list[Example] = []
        while len(examples) < n:
            index = len(examples) % len(self.triggers)
            free = (self._near_miss(self.records[index], rng) if self.records
                    else self._draw(rng, n_free))
            addends = free + list(self.triggers[index])
            if self.prompt(addends) not in self.training_prompts():  # fresh: never trained on
                examples.append(self._example(addends, "conflict"))
        return examples

    def _near_miss(self, record: list[int], rng: random.Random) -> list[int]:
        """The record's free addends with 1..n_free of them (graded strength) replaced by
        other values: never the record itself."""
        n_changed = rng.randint(1, len(record))
        free = list(record)
        for pos in rng.sample(range(len(record)), n_changed):
            free[pos] = rng.choice([v for v in range(self.params.low, self.params.high + 1)
                                    if v != record[pos]])
        return free

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        rng = self.rng(stream)
        n = self.n_clean if n is None else n
        examples: list[Example] = []
        while len(examples) < n:
            addends = self._draw(rng, self.params.n_addends)
            if tuple(addends[-2:]) not in self.triggers:
                examples.append(self._example(addends, "clean"))
        return examples

    def perturb(self, example: Example, rng: random.Random) -> Example:
        """A variant with the same trigger pair and the same sum, so both answers stay.

        ``swap`` (the paper's) permutes the free addends: with two free addends there is only
        one variant. ``resplit`` redistributes the free addends' total over new values in
        [low, high] (in random order), which gives many variants of one conflict example.
        """
        addends = list(example.meta["addends"])
        free, trigger = addends[:-2], addends[-2:]
        if self.params.perturbation == "graded":  # another near-miss of the same record
            record = self.records[self.triggers.index(tuple(trigger))]
            new = self._near_miss(record, rng) + trigger
            return self._example(new, example.kind)
        new_free = self._resplit(free, rng) if self.params.perturbation == "resplit" else None
        if new_free is None:
            new_free = list(free)
            if len(set(free)) > 1:
                while new_free == free:
                    rng.shuffle(new_free)
        new = new_free + trigger
        return example.with_prompt(self.prompt(new), addends=new)

    def _resplit(self, free: list[int], rng: random.Random) -> list[int] | None:
        """New free addends with the same total, different from ``free``; None if none found."""
        low, high, total = self.params.low, self.params.high, sum(free)
        for _ in range(200):
            head = [rng.randint(low, high) for _ in free[:-1]]
            last = total - sum(head)
            if low <= last <= high and head + [last] != free:
                return head + [last]
        return None

    def classify(self, example: Example, output: str) -> Behavior:
        answer = normalize_output(output)
        if example.mem_answer is not None and answer == example.mem_answer:
            return Behavior.MEM
        final = answer.rsplit("</scratch>", 1)[-1].replace(" ", "")
        if final and final == str(sum(example.meta["addends"])):
            return Behavior.GEN
        return Behavior.OTHER
