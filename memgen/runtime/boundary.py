"""The one error boundary of the command line: any exception becomes one line.

Before a run exists every failure is bad input (exit 2); once a run exists it is marked FAILED
and the same one line says so (exit 1). ``MEMGEN_DEBUG=1`` prints the traceback as well.

Why one place: conversions scattered over ``compose``, ``prepare`` and the commands each caught
a few exception types, and every type they missed (an interpolation, a user's rule file, torch
rejecting a thread count, MLflow rejecting a name) printed a traceback and exited 1. Here the
known types get a precise message and everything else still gets one line naming where it
happened.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

BAD_INPUT = 2
RUN_FAILED = 1
_PACKAGE = Path(__file__).resolve().parents[1]  # memgen/


def debug() -> bool:
    return os.environ.get("MEMGEN_DEBUG", "").strip() not in ("", "0", "false", "no")


def first_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


def user_frame(exc: BaseException) -> tuple[str, int] | None:
    """The innermost traceback frame outside memgen and the installed libraries: the user's
    own code (a task's rule file), where the error really is."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename)
        text = str(path)
        inside = (path.is_absolute() and path.resolve().is_relative_to(_PACKAGE)) or \
            "site-packages" in text or "dist-packages" in text or text.startswith("<") or \
            text.startswith(sys.base_prefix) or text.startswith(sys.prefix)
        if not inside:
            found = (text, tb.tb_lineno)
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename:
        found = (exc.filename, exc.lineno or 0)
    return found


def describe(exc: BaseException) -> str:
    """``<what happened>`` for an exception without a memgen message: its type, its first line,
    and the user's file and line when the error came from user code."""
    from memgen.errors import ConfigError  # noqa: PLC0415

    if isinstance(exc, ConfigError):
        return first_line(str(exc), 600) or "invalid config"
    message = first_line(str(exc))
    if type(exc).__module__.startswith("memgen.") and message:  # memgen's own words
        return message
    if isinstance(exc, KeyError) and message:
        message = f"missing key {message}"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    where = user_frame(exc)
    if where:
        text += f" (in {where[0]}, line {where[1]})"
    return text


def report(exc: BaseException) -> int:
    """Print the one line for ``exc`` and return the exit code: 2 for bad input (before a run
    exists, or a config error), 1 for a run that failed."""
    from memgen.errors import ConfigError  # noqa: PLC0415
    from memgen.runtime.interrupts import current_run  # noqa: PLC0415

    run_id = current_run.get("run_id")
    line = describe(exc)
    if debug():
        traceback.print_exception(exc, file=sys.stderr)
    if run_id:
        line += f" (run {run_id} is marked FAILED)"
    elif not isinstance(exc, ConfigError) and not debug():
        line += " (MEMGEN_DEBUG=1 shows the traceback)"
    print(f"memgen: error: {line}", file=sys.stderr)
    return BAD_INPUT if isinstance(exc, ConfigError) or not run_id else RUN_FAILED


def task_error(cfg, exc: BaseException) -> str:
    """One line for a task that cannot be built: the user's rule code (the file and line where
    it failed), or the task's own message (which names its key)."""
    where = user_frame(exc)
    rule = str(cfg.task.params.get("rule") or "")
    if where and rule:
        return (f"task.params.rule: {rule} failed: {describe(exc)}; expected a function "
                f"input -> rule answer that runs without errors")
    if isinstance(exc, (ValueError, TypeError, OSError)) and str(exc).strip():
        return first_line(str(exc), 600)
    return f"task ({cfg.task.name}): cannot build the task: {describe(exc)}"
