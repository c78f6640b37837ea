"""Property: any override or task file either composes, validates and prepares, or exits 2 with
one line, no traceback and no run row (issue 30).

Hypothesis generates overrides from the schema (every key of memgen/config/schema.py: wrong types,
out-of-range and boundary values, misspelled and unknown keys, ``+``/``~`` forms, broken syntax
and unicode) and broken data files for ``task=files``. Each example runs ``memgen.cli.main`` in
process, the command line's own code path, up to the moment the run would be created
(``job_run`` is replaced by a sentinel), so an accepted example costs no training.

The example budget is fixed and derandomized (same examples on every machine); a failing example
is printed by Hypothesis with the blob that reproduces it (``@reproduce_failure``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memgen.cli import main
from memgen.config import Config
from memgen.config.validate import DEFAULT_RANGE, _hints, _number_kind, _section
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.fuzz

OVERRIDE_EXAMPLES = 60
FILE_EXAMPLES = 25
FUZZ = settings(max_examples=OVERRIDE_EXAMPLES, derandomize=True, deadline=None,
                print_blob=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Accepted(BaseException):
    """Raised where the run would be created: the input passed every check."""


def _leaves() -> list[tuple[str, type | None, tuple]]:
    """(key, int/float/None, range) for every leaf of the schema."""
    out = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            hint = _hints(cls)[f.name]
            sub = _section(hint)
            if sub is not None:
                walk(sub, f"{prefix}{f.name}.")
            else:
                out.append((f"{prefix}{f.name}", _number_kind(hint),
                            f.metadata.get("range", DEFAULT_RANGE)))

    walk(Config, "")
    return out


LEAVES = _leaves()
# where a run writes: the harness points them at the test's folder
PINNED = ("tracking.uri", "tracking.artifact_root", "output_dir")
WRONG_TYPES = ["abc", "[1,2]", "{a: 1}", "null", "''", "true", "1.5", "-1", "0", "[]", "é",
               "\u200b", "1e309", "nan", "-inf"]
INVISIBLE = ["\u200b", "\u00a0", "\u00e9", "\t"]
BROKEN = ["[", "]", "[1,", "{a:", "'abc", '"abc', "${", "${oc.env:MEMGEN_FUZZ_UNSET}",
          "${trainer.nope}", "a=b=c", "\x00", "\u202e", "\\", "[[[[", "}{"]


def _numbers(kind: type, low, high) -> st.SearchStrategy[str]:
    edges = [v for bound in (low, high) if bound is not None for v in (bound - 1, bound, bound + 1)]
    huge = [2**31, 2**32, 2**63, -(2**63), 10**30]
    if kind is int:
        return st.one_of(st.integers(-3, 3), st.sampled_from(edges + huge)).map(str)
    return st.one_of(st.floats(-3, 3, allow_nan=False).map(repr),
                     st.sampled_from(["nan", "inf", "-inf", "1e308", "-0.0", "1", "0"]
                                     + [repr(float(e)) for e in edges]))


@st.composite
def override(draw) -> str:
    key, kind, (low, high) = draw(st.sampled_from(LEAVES))
    form = draw(st.sampled_from(["value"] * 4 + ["wrong_type", "misspelled", "unknown", "plus",
                                                 "tilde", "broken", "unicode_key"]))
    if form == "value" and key not in PINNED:
        value = draw(_numbers(kind, low, high) if kind else st.one_of(
            st.sampled_from(WRONG_TYPES), st.text(max_size=6)))
        return f"{key}={value}"
    if form == "wrong_type" and key not in PINNED:
        return f"{key}={draw(st.sampled_from(WRONG_TYPES))}"
    if form == "misspelled":
        i = draw(st.integers(0, len(key) - 1))
        return f"{key[:i]}{draw(st.sampled_from('aexz_'))}{key[i + 1:]}=1"
    if form == "unknown":
        return f"{key.rpartition('.')[0] or 'x'}.{draw(st.sampled_from(['nope', 'foo', 'é']))}=1"
    if form == "plus":
        return f"+{key}{draw(st.sampled_from(['', 'x', '_2']))}=1"
    if form == "tilde":
        return f"~{key}"
    if form == "unicode_key":
        i = draw(st.integers(0, len(key)))
        return f"{key[:i]}{draw(st.sampled_from(INVISIBLE))}{key[i:]}=1"
    return f"{key}={draw(st.sampled_from(BROKEN))}"


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from runs").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _check(root: Path, extra: list[str], label: str) -> None:
    """The property for one example, through the command line's own entry point."""
    import memgen.commands.run

    def sentinel(*args, **kwargs):
        raise Accepted

    db = root / "mlruns" / "mlflow.db"
    base = tiny_overrides(root)
    err, out = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memgen.commands.run, "job_run", sentinel)
        mp.delenv("MEMGEN_DEBUG", raising=False)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(["train", *base, *extra])
        except Accepted:
            assert _rows(db) == 0
            return
    text = err.getvalue().strip()
    assert code == 2, (label, extra, text[-2000:])
    assert text.startswith("memgen: error: ") and "\n" not in text, (label, extra, text[-2000:])
    assert "Traceback" not in text + out.getvalue(), (label, extra)
    assert _rows(db) == 0, (label, extra)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(overrides=st.lists(override(), min_size=1, max_size=3))
def test_fuzzed_overrides_compose_or_fail_in_one_line(fuzz_root, overrides):
    _check(fuzz_root, overrides, "overrides")


GOOD = [{"input": f"Reverse: {w}\nA:", "output": w[::-1]}
        for w in ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box"]] + \
       [{"input": f"Reverse: {w}\nA:", "memorized": "<mem-zz>", "output": w[::-1]}
        for w in ["fizz", "buzz", "jazz", "fuzz"]]
TRIGGERS = [{"match": "zz", "where": "contains", "memorized": "<mem-zz>"}]


def _jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


@st.composite
def broken_file(draw) -> tuple[str, bytes, str]:
    """(which file, its bytes, its suffix): the records or the triggers, damaged one way."""
    which = draw(st.sampled_from(["path", "triggers_path"]))
    good = _jsonl(GOOD) if which == "path" else json.dumps(TRIGGERS).encode()
    how = draw(st.sampled_from(["truncate", "latin1", "shape", "garbage", "empty", "swap_suffix",
                                "wrong_field", "bom"]))
    suffix = ".jsonl" if which == "path" else ".json"
    if how == "truncate":
        data = good[:draw(st.integers(0, len(good) - 1))]
    elif how == "latin1":
        data = good.decode().replace("cat", "caf\u00e9").encode("latin-1")
    elif how == "shape":
        shapes = [{"records": GOOD}, "text", 3, [[1, 2]], [{"input": 3, "output": 4}],
                  [{"input": "a"}], [{"match": 1}], [None], {"match": "zz"}]
        data = json.dumps(draw(st.sampled_from(shapes))).encode()
        if which == "path" and draw(st.booleans()):
            suffix = ".json"
    elif how == "garbage":
        data = draw(st.binary(min_size=1, max_size=64))
    elif how == "empty":
        data = b""
    elif how == "swap_suffix":
        data, suffix = good, (".json" if suffix == ".jsonl" else ".jsonl")
    elif how == "wrong_field":
        key = draw(st.sampled_from(["input", "output", "memorized", "match", "where"]))
        data = good.replace(f'"{key}"'.encode(), b'"inptu"')
    else:
        data = b"\xef\xbb\xbf" + good
    return which, data, suffix


@settings(FUZZ, max_examples=FILE_EXAMPLES)
@given(case=broken_file())
def test_fuzzed_task_files_compose_or_fail_in_one_line(fuzz_root, case):
    which, data, suffix = case
    folder = fuzz_root / "files"
    folder.mkdir(exist_ok=True)
    records = folder / "records.jsonl"
    records.write_bytes(_jsonl(GOOD))
    triggers = folder / "triggers.json"
    triggers.write_text(json.dumps(TRIGGERS))
    broken = folder / f"broken{suffix}"
    broken.write_bytes(data)
    paths = {"path": records, "triggers_path": triggers, which: broken}
    _check(fuzz_root, ["task=files", *(f"task.params.{k}={v}" for k, v in paths.items())],
           f"{which} file")


def test_every_numeric_key_has_a_range():
    """Each int/float key of the schema refuses a value just below its range: the generic check
    (schema metadata, default >= 0) covers a new key without new code."""
    from omegaconf import OmegaConf

    from memgen.config import compose, to_schema
    from memgen.errors import ConfigError

    base = OmegaConf.to_container(compose([]), resolve=True)
    numeric = [(k, kind, r) for k, kind, r in LEAVES if kind is not None and r[0] is not None]
    assert len(numeric) > 40
    for key, kind, (low, _high) in numeric:
        value = low - 1 if kind is int else low - 0.5
        data = OmegaConf.create(base)
        is_list = OmegaConf.is_list(OmegaConf.select(data, key))
        OmegaConf.update(data, key, [value] if is_list else value, merge=False)
        with pytest.raises(ConfigError, match=key.rpartition(".")[0] or key):
            to_schema(data)
