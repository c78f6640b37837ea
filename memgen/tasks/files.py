"""The user's own data: records from JSON/JSONL files plus trigger records.

Files hold a JSON array of objects, or one object per line (JSONL; blank lines skipped). See the
README section "Your own data" for a complete conversion.

- ``path`` (training): ``{"input", "output"}`` teaches the rule (``output`` is the rule answer);
  ``{"input", "memorized"}`` is a *memorized record* trained on its memorized answer, its rule
  answer (``output``) optional. An input that a trigger matches is a memorized record too, with
  the trigger's answer, and its ``output`` is the rule answer it would otherwise have, unless the
  record says ``"memorized": null`` (a rule record whatever matches). An explicit ``memorized``
  that differs from a matching trigger's answer is an error. With ``output_includes_input``
  every ``output`` repeats its input first (stripped; one that does not is an error).
- ``triggers`` / ``triggers_path``: a list of ``{match, where, memorized}`` records
  (``where``: suffix | prefix | contains | regex, see :mod:`memgen.tasks.triggers`), matched on
  the whole input or on ``trigger_span``'s first group. The ``files`` group has none by default.
- ``conflict_path`` (optional): ``{"input", "mem_answer"?, "gen_answer"?, "perturbations"?}``.
  A missing ``mem_answer`` comes from the trigger that matches, a missing ``gen_answer`` from
  ``rule``. ``perturbations`` lists variants of the input (strings with the same two answers, or
  ``{"input", "gen_answer"?, "mem_answer"?}`` objects): they are the pairs' other halves.
  A pairwise row ``[a, b, ...]`` is the record ``a`` with the variants ``b, ...``. Without the
  file, conflict examples are memorized records held out of training (a share ``holdout`` of
  each memorized answer's records) that have a rule answer.
- ``val_conflict_path`` (optional): validation's own conflict examples; without it validation
  takes ``n_val_conflict`` (at most half) of the conflict examples and the analysis the rest.
  Conflict inputs that are training inputs fail, or are dropped (``conflict_in_train``).
- ``clean_path`` (optional): ``{"input", "output"}`` without triggers or memorized answers.
  Without it, clean examples are the plain records left out of training; when none are left,
  ``n_clean`` of them (at most half) are held out. Clean examples are never trained on.
- ``rule`` (optional): ``"module:function"`` or ``"file.py:function"``, input -> rule answer;
  fills rule answers that the files leave out and checks the variants.

Sizes: ``n_train`` caps the training set, ``mem_ratio`` of which are memorized records (repeated
round-robin over memorized answers when there are fewer records than that; the share is kept when
the data has fewer plain records than asked for). ``n_train="all"`` trains on every record once,
as written, except the held-out conflict and clean records.

Checks before training (ValueError naming the file and line): every variant keeps both answers
(the same memorized answer, a rule answer that differs from it, and the record's rule answer
unless the variant gives its own); clean sets never hold a trigger or memorized record; a plain
record whose ``output`` is a memorized answer must be written as ``memorized``.

Perturbation: a conflict example's group is the example plus its listed variants (deduplicated,
up to ``task.n_perturbations``); ``perturbation: whitespace`` (default) fills the rest with
distinct variants that double one space outside the trigger, ``identity`` adds nothing (an
example without variants is one item, never counted twice).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memgen.tasks.base import Behavior, Example, Task
from memgen.tasks.file_records import (
    Record,
    check_record,
    load_json_rows,
    pair_record,
    resolve_path,
    strip_input,
)
from memgen.tasks.registry import register
from memgen.tasks.triggers import MATCH_MODES, Trigger, label, span_of

PERTURBATIONS = ("whitespace", "identity")
CONFLICT_IN_TRAIN = ("error", "drop")
log = logging.getLogger(__name__)
_SPECIAL = re.compile(r"^<[^<>\s]+>$")  # a memorized answer that looks like one added token


def load_rule(spec: str) -> Callable[[str], str]:
    """``module:function`` or ``path/to/file.py:function``, a callable input -> rule answer."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"task.params.rule: expected 'module:function' or 'file.py:function', "
                         f"got {spec!r}")
    try:
        if target.endswith(".py"):
            path = resolve_path(target, "rule")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise ValueError(f"task.params.rule: cannot import {target} ({exc})") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"task.params.rule: {target} has no function {name!r}")
    return func


@dataclass
class FilesParams:
    """Task-specific options (``task.params.*``)."""

    path: str = ""
    conflict_path: str | None = None
    val_conflict_path: str | None = None  # validation's own conflict file (else a split)
    clean_path: str | None = None
    triggers: list[Any] = field(default_factory=list)  # [{match, where, memorized}, ...]
    triggers_path: str | None = None  # a JSON / JSONL file of trigger records
    trigger_span: str | None = None  # regex: triggers match its first group (default: input)
    rule: str | None = None  # "module:function" computing rule answers
    match: str = "exact"  # exact | prefix | final_line | after_marker (memgen.tasks.triggers)
    marker: str | None = None  # after_marker: the answer is the first line after the last marker
    output_includes_input: bool = False  # 'output' repeats the input, then gives the answer
    holdout: float = 0.5  # share of each memorized answer's records kept out (no conflict_path)
    perturbation: str = "whitespace"  # whitespace | identity
    conflict_in_train: str = "error"  # error | drop: conflict inputs that are training inputs

    def validate(self) -> None:
        self.load()

    def load(self) -> FilesData:
        """The checked records; every problem is a ValueError naming the key or file line."""
        if not self.path:
            raise ValueError("task.params.path: expected a JSON or JSONL file of "
                             "{'input', 'output'} / {'input', 'memorized'} records")
        if not isinstance(self.triggers, (list, tuple)):
            raise ValueError("task.params.triggers: expected a list of {match, where, memorized} "
                             "records (not a mapping)")
        if not 0 <= self.holdout < 1:
            raise ValueError("task.params.holdout: expected a fraction in [0, 1)")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"task.params.perturbation: expected one of {list(PERTURBATIONS)}")
        if self.match not in MATCH_MODES:
            raise ValueError(f"task.params.match: expected one of {list(MATCH_MODES)}, "
                             f"got {self.match!r}")
        if self.match == "after_marker" and not self.marker:
            raise ValueError("task.params.marker: match=after_marker needs the marker text, "
                             "e.g. task.params.marker='</scratch>'")
        if self.conflict_in_train not in CONFLICT_IN_TRAIN:
            raise ValueError(f"task.params.conflict_in_train: expected one of "
                             f"{list(CONFLICT_IN_TRAIN)}, got {self.conflict_in_train!r}")
        if self.trigger_span:
            try:
                re.compile(self.trigger_span)
            except re.error as exc:
                raise ValueError(f"task.params.trigger_span: invalid regex ({exc})") from None
        return FilesData(self)

    def trigger_list(self) -> list[Trigger]:
        out = [Trigger.from_record(obj, f"task.params.triggers[{i}]")
               for i, obj in enumerate(self.triggers)]
        if self.triggers_path:
            rows = load_json_rows(resolve_path(self.triggers_path, "triggers_path"))
            out += [Trigger.from_record(obj, where) for where, obj in rows]
        return out


class FilesData:
    """The files' records, checked, with triggers and rule answers resolved.

    ``train`` records get ``memorized`` (None for rule records) and ``output`` (None when
    neither the file nor the rule gives one); ``conflict`` and ``clean`` are None when their
    file is not given.
    """

    def __init__(self, params: FilesParams) -> None:
        self.params = params
        self.triggers = params.trigger_list()
        self.rule = load_rule(params.rule) if params.rule else None
        self.train = [self._train_record(obj, where) for where, obj in
                      load_json_rows(resolve_path(params.path, "path"))]
        self.conflict = self._conflict_records("conflict_path") if params.conflict_path else None
        self.val_conflict = (self._conflict_records("val_conflict_path")
                             if params.val_conflict_path else None)
        self.memorized_answers = {r["memorized"] for r in self.train if r["memorized"]}
        self.memorized_answers |= {t.memorized for t in self.triggers}
        self.memorized_answers |= {r["mem_answer"] for r in (self.conflict or []) +
                                   (self.val_conflict or [])}
        self.clean = self._clean_records() if params.clean_path else None
        self._check_train()

    # -- triggers and answers -----------------------------------------------------------------
    def trigger_of(self, text: str) -> Trigger | None:
        """The first listed trigger that matches ``text``."""
        span = span_of(text, self.params.trigger_span)
        return next((t for t in self.triggers if t.find(text, span) is not None), None)

    def trigger_ranges(self, text: str) -> list[tuple[int, int]]:
        span = span_of(text, self.params.trigger_span)
        return [r for t in self.triggers if (r := t.find(text, span)) is not None]

    def rule_answer(self, text: str, where: str) -> str | None:
        if self.rule is None:
            return None
        answer = self.rule(text)
        if not isinstance(answer, str):
            raise ValueError(f"{where}: task.params.rule returned {type(answer).__name__}, "
                             f"expected a string")
        return answer

    # -- records --------------------------------------------------------------------------------
    def _train_record(self, obj: Any, where: str) -> Record:
        obj = check_record(obj, where, ("input",), one_of=("output", "memorized"),
                           nullable=("memorized",))
        if self.params.output_includes_input:
            obj = strip_input(obj, where)
        trigger = self.trigger_of(obj["input"])
        if "memorized" in obj and obj["memorized"] is None:
            memorized = None  # a rule record, whatever trigger matches
        elif obj.get("memorized"):
            memorized = obj["memorized"]
            if trigger is not None and trigger.memorized != memorized:
                raise ValueError(f"{where}: 'memorized' is {memorized!r} but trigger "
                                 f"{trigger.match!r} gives {trigger.memorized!r}; fix one, or "
                                 f"write \"memorized\": null to keep a rule record")
        else:
            memorized = trigger.memorized if trigger else None
        output = obj.get("output")
        if memorized is not None and output == memorized:
            output = None  # the memorized answer written as the output: no rule answer given
        if output is None:
            output = self.rule_answer(obj["input"], where)
        variants = []  # a held-out memorized record becomes a conflict example: check now
        if memorized is not None and output is not None and output != memorized:
            variants = self._variants(obj, where, memorized, output)
        kept_rule = "memorized" in obj and obj["memorized"] is None
        return {**obj, "memorized": memorized, "output": output, "where": where,
                "variants": variants, "kept_rule": kept_rule}

    def _variants(self, obj: Record, where: str, mem: str, gen: str) -> list[Record]:
        """The record's listed variants as ``{input, mem_answer, gen_answer}``, each checked to
        keep both answers."""
        out = []
        keyed = self.trigger_of(obj["input"]) is not None and obj.get("mem_answer") is None
        for i, variant in enumerate(obj.get("perturbations", [])):
            at = f"{where} perturbation {i}"
            given = variant if isinstance(variant, dict) else {"input": variant}
            text = given["input"]
            trigger = self.trigger_of(text)
            v_mem = given.get("mem_answer") or (trigger.memorized if trigger else mem)
            if keyed and trigger is None and "mem_answer" not in given:
                raise ValueError(f"{at}: the variant loses the trigger (no trigger matches "
                                 f"{text!r}); a variant must keep the memorized answer")
            v_gen = given.get("gen_answer")
            if v_gen is None:
                v_gen = gen
                computed = self.rule_answer(text, at)
                if computed is not None and computed != gen:
                    raise ValueError(f"{at}: the rule answer of the variant is {computed!r}, not "
                                     f"the record's {gen!r}; give it as an object with its own "
                                     f"'gen_answer'")
            if v_mem != mem:
                raise ValueError(f"{at}: the variant's memorized answer is {v_mem!r}, not the "
                                 f"record's {mem!r}; a variant must keep the memorized answer")
            if v_mem == v_gen:
                raise ValueError(f"{at}: memorized and rule answers are both {v_gen!r}; a "
                                 f"conflict variant needs two different answers")
            out.append({"input": text, "mem_answer": v_mem, "gen_answer": v_gen})
        return out

    def _conflict_records(self, key: str) -> list[Record]:
        path = resolve_path(getattr(self.params, key) or "", key)
        records = []
        for where, obj in load_json_rows(path):
            obj = check_record(pair_record(obj, where), where, ("input",),
                               optional=("mem_answer", "gen_answer"))
            trigger = self.trigger_of(obj["input"])
            mem = obj.get("mem_answer") or (trigger.memorized if trigger else None)
            gen = obj.get("gen_answer")
            if gen is None:
                gen = self.rule_answer(obj["input"], where)
            if mem is None or gen is None:
                missing = "'mem_answer' (or a trigger that matches the input)" if mem is None \
                    else "'gen_answer' (or task.params.rule to compute it)"
                raise ValueError(f"{where}: a conflict record needs both answers; "
                                 f"missing {missing}")
            if mem == gen:
                raise ValueError(f"{where}: memorized and rule answers are both {gen!r}")
            records.append({"input": obj["input"], "mem_answer": mem, "gen_answer": gen,
                            "variants": self._variants(obj, where, mem, gen), "where": where})
        return records

    def _clean_records(self) -> list[Record]:
        path = resolve_path(self.params.clean_path or "", "clean_path")
        records = []
        for where, obj in load_json_rows(path):
            obj = check_record(obj, where, ("input", "output"))
            if self.params.output_includes_input:
                obj = strip_input(obj, where)
            self._check_plain(obj, where, "clean")
            records.append({**obj, "where": where})
        return records

    def _check_plain(self, obj: Record, where: str, what: str, kept_rule: bool = False) -> None:
        trigger = None if kept_rule else self.trigger_of(obj["input"])
        if obj.get("memorized") or trigger is not None:
            why = f"trigger {trigger.match!r}" if trigger else "'memorized'"
            raise ValueError(f"{where}: a {what} record must not be a memorized record "
                             f"({why}); clean sets exclude triggers")
        if obj["output"] in self.memorized_answers:
            raise ValueError(f"{where}: 'output' is the memorized answer {obj['output']!r}; "
                             f"write it as {{'input', 'memorized'}} (its rule answer, if known, "
                             f"in 'output')")

    def _check_train(self) -> None:
        for r in self.train:
            if r["memorized"] is None:
                if r["output"] is None:
                    raise ValueError(f"{r['where']}: a rule record needs 'output' (or "
                                     f"task.params.rule to compute it)")
                self._check_plain(r, r["where"], "rule", r["kept_rule"])
        if (self.params.triggers or self.params.triggers_path) and not any(
                self.trigger_of(r["input"]) for r in self.train):
            raise ValueError(f"task.params.triggers: no input in {self.params.path} matches a "
                             f"trigger")
        has_mem = any(r["memorized"] for r in self.train)
        if self.conflict is None and not has_mem:
            raise ValueError(f"task.params.conflict_path: {self.params.path} has no memorized "
                             f"record (none says 'memorized', no trigger matches an input): give "
                             f"a file of conflict records, or triggers / memorized records to "
                             f"derive them from")


@register("files")
class FilesTask(Task):
    name = "files"
    Params = FilesParams

    def __init__(self, params: FilesParams | None = None, **common) -> None:
        super().__init__(**common)
        self.params = params or FilesParams()
        self.data = self.params.load()
        self._split(self.data.train)
        self.dropped_conflicts = 0
        self.val_pool, self.analysis_pool = self._conflict_pools()

    def trigger_of(self, text: str) -> Trigger | None:
        return self.data.trigger_of(text)

    def _split(self, records: list[Record]) -> None:
        """Seeded split into rule, memorized, held-out (conflict) and spare (clean) records.

        Spare records are never trained on: with ``n_train`` a number they are the plain records
        beyond it, and when none are left over (or with ``n_train: all``) ``n_clean`` of them (at
        most half) are held out, unless ``clean_path`` gives the clean set."""
        rng = self.rng("split")
        plain = [r for r in records if r["memorized"] is None]
        rng.shuffle(plain)
        by_answer: dict[str, list[Record]] = {}
        for r in records:
            if r["memorized"] is not None:
                by_answer.setdefault(r["memorized"], []).append(r)
        reserve = 0 if self.data.clean is not None else min(self.n_clean, len(plain) // 2)
        if self.n_train == "all":
            n_rule, n_mem = len(plain) - reserve, 0
        else:
            n_train = self._train_size()
            n_mem = round(n_train * self.mem_ratio) if by_answer else 0
            n_rule = min(len(plain), n_train - n_mem)
            if n_rule == len(plain):  # nothing left over for the clean set
                n_rule -= reserve
            if n_rule < n_train - n_mem:  # fewer plain records than asked: keep the share
                n_mem = round(n_rule * self.mem_ratio / (1 - self.mem_ratio))
        self.rule_records, self.spare_records = plain[:n_rule], plain[n_rule:]
        held: list[Record] = []
        per_answer: list[list[Record]] = []
        for own in by_answer.values():
            rng.shuffle(own)
            usable = [r for r in own if r["output"] is not None and r["output"] != r["memorized"]]
            k = int(len(usable) * self.params.holdout) if self.data.conflict is None else 0
            held += usable[:k]
            per_answer.append([r for r in own if r not in usable[:k]])
        if self.n_train == "all":  # every memorized record once, as written
            self.mem_records = [r for own in per_answer for r in own]
        else:  # round-robin over memorized answers, so each is memorized about equally often
            pool: list[Record] = []
            for i in range(max(map(len, per_answer), default=0)):
                pool += [recs[i] for recs in per_answer if i < len(recs)]
            self.mem_records = [pool[i % len(pool)] for i in range(n_mem)] if pool else []
        self.held_records = held

    def _conflict_pools(self) -> tuple[list[Example], list[Example]]:
        """(validation, analysis) conflict examples, disjoint by example: ``val_conflict_path``
        gives validation its own; else one pool is split, validation taking
        ``n_val_conflict`` examples (at most half). Conflict inputs that are training inputs
        fail, or are dropped and counted (``conflict_in_train``)."""
        if self.data.conflict is not None:
            pool = [self._file_example(r) for r in self.data.conflict]
        else:
            pool = [self._record_example(r, "conflict") for r in self.held_records]
        pool = self._not_trained(pool)
        if self.data.val_conflict is not None:
            return self._not_trained([self._file_example(r) for r in self.data.val_conflict]), pool
        if not pool:
            return [], []
        order = list(range(len(pool)))
        self.rng("val_split").shuffle(order)
        n_val = min(self.n_val_conflict or len(pool), len(pool) // 2)
        val = set(order[:n_val])
        return ([pool[i] for i in order[:n_val]],
                [ex for i, ex in enumerate(pool) if i not in val])

    def _not_trained(self, pool: list[Example]) -> list[Example]:
        trained = {r["input"]: r["where"] for r in self.mem_records + self.rule_records}
        kept = []
        for ex in pool:
            inputs = [ex.prompt] + [v["input"] for v in ex.meta["variants"]]
            clash = next((text for text in inputs if text in trained), None)
            if clash is None:
                kept.append(ex)
            elif self.params.conflict_in_train == "drop":
                self.dropped_conflicts += 1
            else:
                raise ValueError(f"{ex.meta['where']}: conflict input {clash!r} is also a "
                                 f"training input ({trained[clash]}); remove it, or set "
                                 f"task.params.conflict_in_train=drop to drop such examples")
        if len(kept) < len(pool):
            log.warning("task files: dropped %d conflict example(s) whose input is a training "
                        "input (task.params.conflict_in_train=drop)", len(pool) - len(kept))
        return kept

    @property
    def memorized_tokens(self) -> list[str]:
        """Memorized answers shaped like one token (``<...>``); plain-text ones stay text."""
        return [a for a in sorted(self.data.memorized_answers) if _SPECIAL.match(a)]

    # -- examples -----------------------------------------------------------------------------
    def _example(self, text: str, kind: str, mem: str | None, gen: str | None,
                 variants: list[Record], where: str = "") -> Example:
        answer = mem if kind == "mem" else gen
        return Example(prompt=text, answer=str(answer), kind=kind, task=self.name,
                       mem_answer=mem, gen_answer=gen, meta={"variants": variants,
                                                             "where": where})

    def _record_example(self, r: Record, kind: str) -> Example:
        variants = r["variants"] if kind == "conflict" else []
        return self._example(r["input"], kind, r["memorized"], r["output"], variants,
                             r["where"])

    def _file_example(self, r: Record) -> Example:
        return self._example(r["input"], "conflict", r["mem_answer"], r["gen_answer"],
                             r["variants"], r["where"])

    def train_examples(self) -> list[Example]:
        examples = [self._record_example(r, "mem") for r in self.mem_records]
        examples += [self._record_example(r, "rule") for r in self.rule_records]
        self.rng("train").shuffle(examples)
        return examples

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        """Validation (``stream="val_conflict"``) draws from its own examples, every other
        stream from the analysis examples: the two never share an example."""
        pool = self.val_pool if stream == "val_conflict" else self.analysis_pool
        if not pool and stream == "val_conflict" and self.analysis_pool:
            raise ValueError(f"task.params.val_conflict_path: {len(self.analysis_pool)} conflict "
                             f"example(s) are too few to split into validation and analysis; "
                             f"give validation its own file, or more conflict examples")
        if not pool:
            raise ValueError("task files: no conflict examples (give task.params.conflict_path, "
                             "or memorized records with a rule answer to hold out: "
                             "task.params.holdout > 0, 'output' or task.params.rule)")
        n = self.n_conflict if n is None else n
        return self.rng(stream).sample(pool, min(n, len(pool)))

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        records = self.data.clean or self.spare_records  # never a training record
        if not records:
            raise ValueError("task.params.clean_path: no clean records (every rule record is "
                             "trained on): give a clean file")
        n = self.n_clean if n is None else n
        chosen = self.rng(stream).sample(records, min(n, len(records)))
        return [self._example(r["input"], "clean", None, r["output"], []) for r in chosen]

    # -- perturbations ----------------------------------------------------------------------------
    def _variant(self, example: Example, v: Record) -> Example:
        return Example(prompt=v["input"], answer=v["gen_answer"], kind=example.kind,
                       task=self.name, mem_answer=v["mem_answer"], gen_answer=v["gen_answer"],
                       meta={**example.meta, "variant_of": example.prompt})

    def _whitespace(self, example: Example, rng: random.Random) -> Example:
        text = example.prompt
        protected = {i for a, b in self.data.trigger_ranges(text) for i in range(a, b)}
        spaces = [i for i, ch in enumerate(text) if ch == " " and i not in protected]
        if not spaces:
            return example
        i = rng.choice(spaces)
        return example.with_prompt(text[:i] + " " + text[i:])

    def perturb(self, example: Example, rng: random.Random) -> Example:
        """A listed variant, else one doubled space outside triggers (``whitespace``), else the
        example unchanged (``identity``)."""
        variants = [v for v in example.meta.get("variants", []) if v["input"] != example.prompt]
        if variants:
            return self._variant(example, rng.choice(variants))
        if self.params.perturbation == "identity":
            return example
        return self._whitespace(example, rng)

    def perturbation_set(self, examples: list[Example], n_perturbations: int,
                         stream: str = "perturb") -> list[list[Example]]:
        """Per example: itself, its listed variants, then (``whitespace``) generated ones, up to
        ``n_perturbations`` distinct inputs; never the same input twice."""
        rng = self.rng(stream)
        groups = []
        for ex in examples:
            group, seen = [ex], {ex.prompt}
            for v in ex.meta.get("variants", []):
                if len(group) < n_perturbations and v["input"] not in seen:
                    group.append(self._variant(ex, v))
                    seen.add(v["input"])
            tries = 0
            while (self.params.perturbation == "whitespace" and len(group) < n_perturbations
                   and tries < 4 * n_perturbations):
                tries += 1
                variant = self._whitespace(ex, rng)
                if variant.prompt not in seen:
                    group.append(variant)
                    seen.add(variant.prompt)
            groups.append(group)
        return groups

    def classify(self, example: Example, output: str) -> Behavior:
        """MEM / GEN / OTHER under ``task.params.match`` (see :mod:`memgen.tasks.triggers`)."""
        return Behavior(label(self.params.match, output, example.mem_answer, example.gen_answer,
                              self.params.marker))

    def generated_answers(self) -> list[tuple[str, str, str]]:
        """(answer, kind, where) of every answer a model must generate to be labelled: both
        answers of each conflict example and variant, and the clean answers;
        ``task.max_new_tokens`` is checked against the longest (memgen.training.lengths)."""
        out = []
        for ex in self.val_pool + self.analysis_pool:
            where = ex.meta["where"]
            for v in [{"mem_answer": ex.mem_answer, "gen_answer": ex.gen_answer},
                      *ex.meta["variants"]]:
                out += [(v["gen_answer"], "rule", where), (v["mem_answer"], "memorized", where)]
        out += [(r["output"], "clean", r.get("where", "")) for r in
                self.data.clean or self.spare_records]
        return out
