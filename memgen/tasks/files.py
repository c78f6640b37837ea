"""The user's own data: records from JSON/JSONL files plus a trigger spec.

Files hold a JSON array of objects, or one object per line (JSONL; blank lines skipped):

- ``path`` (training): ``{"input": ..., "output": ...}``; ``input`` is the prompt verbatim and
  ``output`` the rule's answer.
- ``triggers`` (optional): ``{substring: memorized_output}``. A training record whose input
  contains a trigger (the first one listed, if several) is a *trigger record*: when it is trained
  on, its target is the memorized output, and its own ``output`` is the rule answer it would
  otherwise have. That is how the arithmetic task is built, with your data.
- ``conflict_path`` (optional): ``{"input", "mem_answer", "gen_answer"}`` and optionally
  ``"perturbations": [other inputs with the same two answers]``. Without it, conflict examples are
  the trigger records held out of training (a share ``holdout`` of each trigger's records): GEN is
  the record's output, MEM the trigger's memorized output.
- ``clean_path`` (optional): ``{"input", "output"}`` without triggers. Without it, clean examples
  are the trigger-free records left out of training, or else the training ones.

Sizes: ``n_train`` caps the training set, ``mem_ratio`` of which are trigger records (repeated
round-robin over the triggers when there are fewer records than that; the share is kept when
the data has fewer plain records than asked for). Conflict and clean sets are at most as large as
the data allows. Without ``triggers`` the training records are used as written (no mem share).

Perturbation: per-record ``perturbations`` when given; otherwise ``perturbation: whitespace``
(default) doubles one space outside any trigger occurrence, which keeps both answers for most
text tasks, and ``identity`` returns the input unchanged (no pairs can then be found; use it when
whitespace matters, e.g. code, and supply ``perturbations`` instead).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memgen.tasks.base import Behavior, Example, Task

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PERTURBATIONS = ("whitespace", "identity")
TRAIN_KEYS = ("input", "output")
CONFLICT_KEYS = ("input", "mem_answer", "gen_answer")
_SPECIAL = re.compile(r"^<[^<>\s]+>$")  # a memorized answer that looks like one added token

Record = dict[str, Any]


def resolve_path(path: str, key: str) -> Path:
    """``path`` as given (absolute or from the working directory), else from the project root."""
    given = Path(path).expanduser()
    for candidate in (given, PROJECT_ROOT / given):
        if candidate.is_file():
            return candidate
    raise ValueError(f"task.params.{key}: file not found: {path} "
                     f"(looked in {Path.cwd()} and {PROJECT_ROOT})")


def _check(obj: Any, keys: tuple[str, ...], where: str) -> Record:
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in keys):
        names = ", ".join(f"'{k}'" for k in keys[:-1]) + f" and '{keys[-1]}'"
        raise ValueError(f"{where}: expected an object with string keys {names}")
    extra = obj.get("perturbations", [])
    if not (isinstance(extra, list) and all(isinstance(s, str) for s in extra)):
        raise ValueError(f"{where}: expected 'perturbations' to be a list of strings")
    return obj


def load_records(path: Path, keys: tuple[str, ...]) -> list[Record]:
    """Records of a JSON array or JSONL file; malformed content raises ValueError naming the file,
    the line (JSONL) or record index (JSON array) and what was expected."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" or (path.suffix != ".jsonl" and text.lstrip().startswith("[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of records")
        records = [_check(obj, keys, f"{path} record {i}") for i, obj in enumerate(data)]
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {lineno}: invalid JSON ({exc.msg})") from None
            records.append(_check(obj, keys, f"{path} line {lineno}"))
    if not records:
        raise ValueError(f"{path}: no records")
    return records


@dataclass
class FilesParams:
    """Task-specific options (``task.params.*``)."""

    path: str = ""
    conflict_path: str | None = None
    clean_path: str | None = None
    triggers: dict[str, str] = field(default_factory=dict)
    holdout: float = 0.5  # share of each trigger's records kept out of training (no conflict_path)
    perturbation: str = "whitespace"  # whitespace | identity

    def validate(self) -> None:
        if not self.path:
            raise ValueError("task.params.path: expected a JSON or JSONL file of "
                             "{'input', 'output'} records")
        if not isinstance(self.triggers, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in self.triggers.items()):
            raise ValueError("task.params.triggers: expected a mapping of non-empty substrings "
                             "to memorized outputs")
        if not 0 <= self.holdout < 1:
            raise ValueError("task.params.holdout: expected a fraction in [0, 1)")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"task.params.perturbation: expected one of {list(PERTURBATIONS)}")
        if self.conflict_path is None and not self.triggers:
            raise ValueError("task.params.conflict_path: expected a file of conflict records, "
                             "or task.params.triggers to derive them from")
        self.load()

    def load(self) -> tuple[list[Record], list[Record] | None, list[Record] | None]:
        """Training, conflict and clean records (the last two None when not given)."""
        train = load_records(resolve_path(self.path, "path"), TRAIN_KEYS)
        conflict = (load_records(resolve_path(self.conflict_path, "conflict_path"), CONFLICT_KEYS)
                    if self.conflict_path else None)
        clean = (load_records(resolve_path(self.clean_path, "clean_path"), TRAIN_KEYS)
                 if self.clean_path else None)
        if self.triggers and not any(t in r["input"] for r in train for t in self.triggers):
            raise ValueError(f"task.params.triggers: no input in {self.path} contains a trigger")
        return train, conflict, clean


class FilesTask(Task):
    name = "files"
    Params = FilesParams

    def __init__(self, params: FilesParams | None = None, **common) -> None:
        super().__init__(**common)
        self.params = params or FilesParams()
        self.params.validate()
        train, conflict, clean = self.params.load()
        self._conflict_records = conflict
        self._clean_records = clean
        self._split(train)

    def trigger_of(self, text: str) -> str | None:
        """The first listed trigger that occurs in ``text``."""
        return next((t for t in self.params.triggers if t in text), None)

    def _split(self, records: list[Record]) -> None:
        """Seeded split into rule, memorized, held-out (conflict) and spare (clean) records."""
        rng = self.rng("split")
        plain = [r for r in records if self.trigger_of(r["input"]) is None]
        rng.shuffle(plain)
        n_mem = round(self.n_train * self.mem_ratio) if self.params.triggers else 0
        n_rule = min(len(plain), self.n_train - n_mem)
        if n_rule < self.n_train - n_mem:  # fewer plain records than asked: keep the share
            n_mem = round(n_rule * self.mem_ratio / (1 - self.mem_ratio))
        self.rule_records, self.spare_records = plain[:n_rule], plain[n_rule:]
        held: list[Record] = []
        per_trigger: list[list[Record]] = []
        for trigger in self.params.triggers:
            own = [r for r in records if self.trigger_of(r["input"]) == trigger]
            rng.shuffle(own)
            k = int(len(own) * self.params.holdout) if self._conflict_records is None else 0
            held += own[:k]
            per_trigger.append(own[k:])
        # Round-robin over triggers, so every trigger is memorized about equally often.
        pool: list[Record] = []
        for i in range(max(map(len, per_trigger), default=0)):
            pool += [recs[i] for recs in per_trigger if i < len(recs)]
        self.mem_records = [pool[i % len(pool)] for i in range(n_mem)] if pool else []
        self.held_records = held

    @property
    def memorized_tokens(self) -> list[str]:
        """Memorized answers shaped like one token (``<...>``); plain-text ones stay text."""
        answers = list(self.params.triggers.values())
        answers += [r["mem_answer"] for r in self._conflict_records or []]
        return [a for a in dict.fromkeys(answers) if _SPECIAL.match(a)]

    # -- examples -----------------------------------------------------------------------------
    def _train_example(self, record: Record, kind: str) -> Example:
        trigger = self.trigger_of(record["input"])
        mem = self.params.triggers[trigger] if trigger is not None else None
        answer = mem if kind == "mem" else record["output"]
        return Example(prompt=record["input"], answer=str(answer), kind=kind, task=self.name,
                       mem_answer=mem, gen_answer=record["output"],
                       meta={"trigger": trigger,
                             "perturbations": list(record.get("perturbations", []))})

    def _conflict_pool(self) -> list[Example]:
        if self._conflict_records is not None:
            return [Example(prompt=r["input"], answer=r["gen_answer"], kind="conflict",
                            task=self.name, mem_answer=r["mem_answer"], gen_answer=r["gen_answer"],
                            meta={"trigger": self.trigger_of(r["input"]),
                                  "perturbations": list(r.get("perturbations", []))})
                    for r in self._conflict_records]
        examples = [self._train_example(r, "conflict") for r in self.held_records]
        return [ex for ex in examples if ex.mem_answer != ex.gen_answer]

    def train_examples(self) -> list[Example]:
        examples = [self._train_example(r, "mem") for r in self.mem_records]
        examples += [self._train_example(r, "rule") for r in self.rule_records]
        self.rng("train").shuffle(examples)
        return examples

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        pool = self._conflict_pool()
        if not pool:
            raise ValueError("task files: no conflict examples (give task.params.conflict_path, "
                             "or triggers with records to hold out: task.params.holdout > 0 and "
                             "at least two records per trigger)")
        n = self.n_conflict if n is None else n
        return self.rng(stream).sample(pool, min(n, len(pool)))

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        records = self._clean_records or self.spare_records or self.rule_records
        n = self.n_clean if n is None else n
        chosen = self.rng(stream).sample(records, min(n, len(records)))
        return [self._train_example(r, "clean") for r in chosen]

    def perturb(self, example: Example, rng: random.Random) -> Example:
        """A listed alternative input, else one doubled space outside triggers, else unchanged."""
        alternatives = [p for p in example.meta.get("perturbations", []) if p != example.prompt]
        if alternatives:
            return example.with_prompt(rng.choice(alternatives))
        if self.params.perturbation == "identity":
            return example
        text = example.prompt
        protected = {i for t in self.params.triggers for m in re.finditer(re.escape(t), text)
                     for i in range(m.start(), m.end())}
        spaces = [i for i, ch in enumerate(text) if ch == " " and i not in protected]
        if not spaces:
            return example
        i = rng.choice(spaces)
        return example.with_prompt(text[:i] + " " + text[i:])

    def classify(self, example: Example, output: str) -> Behavior:
        """Exact match (spaces collapsed) over as many leading lines as the answer has."""
        if example.mem_answer is not None and _matches(output, example.mem_answer):
            return Behavior.MEM
        if example.gen_answer is not None and _matches(output, example.gen_answer):
            return Behavior.GEN
        return Behavior.OTHER


def _matches(output: str, answer: str) -> bool:
    want = [" ".join(line.split()) for line in answer.strip().split("\n")]
    got = [" ".join(line.split()) for line in output.strip().split("\n")][:len(want)]
    return got == want
