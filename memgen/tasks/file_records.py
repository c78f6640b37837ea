"""Reading the ``files`` task's JSON / JSONL files, with errors a user can act on.

Every error is a ``ValueError`` whose first line names the file, the line (JSONL, or the line a
JSON parser stopped at) or record index, and what was expected, including the usual mix-ups:
a JSON array or pretty-printed records saved as ``.jsonl``, JSONL saved as ``.json``, and text
that is not UTF-8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]

Record = dict[str, Any]


def resolve_path(path: str, key: str) -> Path:
    """``path`` as given (absolute or from the working directory), else from the project root."""
    given = Path(path).expanduser()
    for candidate in (given, PROJECT_ROOT / given):
        if candidate.is_file():
            return candidate
    for candidate in (given, PROJECT_ROOT / given):
        if candidate.is_dir():
            raise ValueError(f"task.params.{key}: {candidate} is a directory; expected a file")
    raise ValueError(f"task.params.{key}: file not found: {path} "
                     f"(looked in {Path.cwd()} and {PROJECT_ROOT})")


def read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 fail with the file, line and byte offset."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: expected UTF-8 text, found byte "
                         f"0x{raw[exc.start]:02x} at offset {exc.start} (re-save the file as "
                         f"UTF-8, e.g. `iconv -f latin1 -t utf-8`)") from None


def _json_array(path: Path, text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            hint = "; this looks like JSONL (one record per line): name the file .jsonl"
        raise ValueError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg}){hint}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of records [{{...}}, ...]"
                         + (", or JSONL with one record per line in a .jsonl file"
                            if isinstance(data, dict) else ""))
    return data


def _jsonl(path: Path, text: str) -> list[tuple[int, Any]]:
    if text.lstrip().startswith("["):
        raise ValueError(f"{path} line 1: expected one JSON record per line (JSONL), found a "
                         f"JSON array: name the file .json, or write one record per line")
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            hint = ""
            if line.strip() in ("{", "}") or line.rstrip().endswith(("{", ",")):
                hint = ("; each line must hold one whole record: this looks like pretty-printed "
                        "JSON (save it as a JSON array in a .json file, or one record per line)")
            raise ValueError(f"{path} line {lineno}: invalid JSON ({exc.msg}){hint}") from None
    return rows


def load_json_rows(path: Path) -> list[tuple[str, Any]]:
    """``(where, object)`` for each record of a JSON array or JSONL file; ``where`` names the
    file and the line (JSONL) or record index (JSON array) for later messages."""
    text = read_text(path)
    if path.suffix == ".json" or (path.suffix != ".jsonl" and text.lstrip().startswith("[")):
        rows = [(f"{path} record {i}", obj) for i, obj in enumerate(_json_array(path, text))]
    else:
        rows = [(f"{path} line {lineno}", obj) for lineno, obj in _jsonl(path, text)]
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def check_record(obj: Any, where: str, required: tuple[str, ...],
                 optional: tuple[str, ...] = (), one_of: tuple[str, ...] = (),
                 nullable: tuple[str, ...] = ()) -> Record:
    """``obj`` as a record with string values under ``required`` (and ``optional`` when
    present; ``nullable`` keys may also be null), at least one of ``one_of``, and
    ``perturbations`` a list of variants."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object with string keys {_names(required)}")
    for key in required:
        if not isinstance(obj.get(key), str):
            raise ValueError(f"{where}: expected an object with string keys {_names(required)}"
                             f" (got {type(obj.get(key)).__name__} for '{key}')")
    for key in optional + one_of:
        if key in obj and not isinstance(obj[key], str) and not (
                key in nullable and obj[key] is None):
            raise ValueError(f"{where}: expected '{key}' to be a string, "
                             f"got {type(obj[key]).__name__}")
    if one_of and not any(key in obj for key in one_of):
        raise ValueError(f"{where}: expected at least one of {_names(one_of, 'or')}")
    variants = obj.get("perturbations", [])
    if not isinstance(variants, list) or not all(
            isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("input"), str))
            for v in variants):
        raise ValueError(f"{where}: expected 'perturbations' to be a list of inputs, or of "
                         f"objects with 'input' (and optionally 'gen_answer', 'mem_answer')")
    return obj


def _names(keys: tuple[str, ...], word: str = "and") -> str:
    quoted = [f"'{k}'" for k in keys]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" {word} {quoted[-1]}"


def strip_input(obj: Record, where: str) -> Record:
    """``output`` without the prompt it repeats (``output_includes_input``): an output that does
    not start with its input is an error naming the record."""
    output = obj.get("output")
    if not isinstance(output, str):
        return obj
    if not output.startswith(obj["input"]):
        raise ValueError(f"{where}: 'output' does not start with its 'input' "
                         f"(task.params.output_includes_input=true expects the prompt repeated, "
                         f"then the answer); output begins {output[:40]!r}")
    return {**obj, "output": output[len(obj["input"]):]}


def pair_record(obj: Any, where: str) -> Any:
    """A pairwise row ``[a, b, ...]`` (inputs, or objects with ``input``) as a conflict record:
    ``a`` is the example, the rest its explicit variants. Other rows pass unchanged."""
    if not isinstance(obj, list):
        return obj
    if len(obj) < 2 or not all(isinstance(v, str) or (isinstance(v, dict) and isinstance(
            v.get("input"), str)) for v in obj):
        raise ValueError(f"{where}: expected a pairwise record [a, b, ...] of 2 or more inputs "
                         f"(strings, or objects with 'input')")
    first = obj[0] if isinstance(obj[0], dict) else {"input": obj[0]}
    if "perturbations" in first:
        raise ValueError(f"{where}: a pairwise record lists its variants as the row itself; "
                         f"drop 'perturbations' from its first element")
    return {**first, "perturbations": list(obj[1:])}
