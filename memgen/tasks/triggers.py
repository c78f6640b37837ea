"""Trigger records and output matching for the ``files`` task.

A trigger is a record ``{match, where, memorized}``: an input whose *span* (the whole input, or
the first group of ``task.params.trigger_span``) ends with (``suffix``), starts with
(``prefix``), contains (``contains``) or matches the regular expression (``regex``) ``match``
has the memorized answer ``memorized``. Any characters are allowed: they live in a list, never in
config keys or MLflow param names.

Output matching (``task.params.match``) decides MEM / GEN / OTHER:

- ``exact`` (default): the output's first lines equal the answer's lines (spaces collapsed);
- ``prefix``: MEM if the output starts with the memorized answer, GEN if it starts with the rule
  answer (the memorized answer is checked first);
- ``final_line``: MEM as ``prefix``; GEN if the output's answer line equals the rule answer's
  last non-empty line. The answer line is the output's n-th non-empty line, n being the rule
  answer's number of non-empty lines (a scratchpad of the rule's length, then the answer), or
  its last non-empty line when it has fewer; lines after it are ignored (a model that goes on
  after the answer still counts as GEN);
- ``after_marker`` (with ``marker``): MEM as ``prefix``; GEN if the first non-empty line after
  the last ``marker`` in the output equals the same line of the rule answer (the whole rule
  answer when it has no marker). An output without the marker is not GEN.

Lines are compared with runs of whitespace collapsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

WHERE = ("suffix", "prefix", "contains", "regex")
MATCH_MODES = ("exact", "prefix", "final_line", "after_marker")


@dataclass(frozen=True)
class Trigger:
    """One trigger record; ``find`` returns where it occurs in an input, if it does."""

    match: str
    memorized: str
    where: str = "contains"

    @classmethod
    def from_record(cls, obj: Any, where: str) -> Trigger:
        keys = "{match: <text>, where: suffix|prefix|contains|regex, memorized: <answer>}"
        if not isinstance(obj, dict) or not isinstance(obj.get("match"), str) or not obj[
                "match"] or not isinstance(obj.get("memorized"), str) or not obj["memorized"]:
            raise ValueError(f"{where}: expected a trigger record {keys}, got {obj!r}")
        unknown = set(obj) - {"match", "where", "memorized"}
        if unknown:
            raise ValueError(f"{where}: unknown trigger key(s) {sorted(unknown)}; expected {keys}")
        kind = obj.get("where", "contains")
        if kind not in WHERE:
            raise ValueError(f"{where}: 'where' must be one of {list(WHERE)}, got {kind!r}")
        if kind == "regex":
            try:
                re.compile(obj["match"])
            except re.error as exc:
                raise ValueError(f"{where}: invalid regex {obj['match']!r} ({exc})") from None
        return cls(match=obj["match"], memorized=obj["memorized"], where=kind)

    def find(self, text: str, span: tuple[int, int]) -> tuple[int, int] | None:
        """Character range of the match inside ``text[span[0]:span[1]]``, else None."""
        start, end = span
        part = text[start:end]
        if self.where == "suffix":
            hit = part.endswith(self.match)
            return (end - len(self.match), end) if hit else None
        if self.where == "prefix":
            return (start, start + len(self.match)) if part.startswith(self.match) else None
        if self.where == "contains":
            i = part.find(self.match)
            return (start + i, start + i + len(self.match)) if i >= 0 else None
        found = re.search(self.match, part)
        return (start + found.start(), start + found.end()) if found else None


def span_of(text: str, pattern: str | None) -> tuple[int, int]:
    """The part of an input that triggers are matched on: ``pattern``'s first group (or whole
    match), else the whole input; an input the pattern misses has an empty span."""
    if not pattern:
        return 0, len(text)
    found = re.search(pattern, text)
    if found is None:
        return 0, 0
    group = 1 if found.re.groups else 0
    return found.start(group), found.end(group)


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().split("\n")]


def exact(output: str, answer: str) -> bool:
    """The output's first lines equal the answer's lines (spaces collapsed)."""
    want = _lines(answer)
    return _lines(output)[:len(want)] == want


def starts_with(output: str, answer: str) -> bool:
    """The output starts with the answer (leading whitespace and runs of spaces ignored)."""
    return " ".join(output.split()).startswith(" ".join(answer.split()))


def _nonempty(text: str) -> list[str]:
    return [line for line in _lines(text) if line]


def final_line(output: str, answer: str) -> bool:
    """The output's answer line (see the module doc) equals the answer's last non-empty line."""
    got, want = _nonempty(output), _nonempty(answer)
    if not got or not want:
        return False
    return got[min(len(want), len(got)) - 1] == want[-1]


def after_marker_line(text: str, marker: str) -> str | None:
    """The first non-empty line after the last ``marker`` (None without the marker or a line)."""
    at = text.rfind(marker)
    if at < 0:
        return None
    rest = _nonempty(text[at + len(marker):])
    return rest[0] if rest else None


def after_marker(output: str, answer: str, marker: str) -> bool:
    """The line after the output's last marker equals the answer's (or the whole answer)."""
    got = after_marker_line(output, marker)
    want = after_marker_line(answer, marker) if marker in answer else " ".join(answer.split())
    return got is not None and got == want


def label(mode: str, output: str, mem: str | None, gen: str | None,
          marker: str | None = None) -> str:
    """"MEM", "GEN" or "OTHER" for ``output`` under matching ``mode`` (see the module doc)."""
    mem_test = exact if mode == "exact" else starts_with
    if mode == "after_marker":
        if not marker:
            raise ValueError("task.params.marker: match=after_marker needs the marker text")

        def gen_test(output: str, answer: str) -> bool:
            return after_marker(output, answer, marker)
    else:
        gen_test = {"exact": exact, "prefix": starts_with, "final_line": final_line}[mode]
    if mem is not None and mem_test(output, mem):
        return "MEM"
    if gen is not None and gen_test(output, gen):
        return "GEN"
    return "OTHER"
