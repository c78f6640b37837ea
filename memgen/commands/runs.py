"""``memgen runs list|clean``, and the line a command ends with on Ctrl-C: which run is KILLED and
the command that continues it (exit 130 everywhere, no traceback)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from memgen.runtime.interrupts import current_run
from memgen.tracking.stale import Stale

INTERRUPTED = 130


def runs_command(action: str, cfg: DictConfig) -> int:
    """``memgen runs list|clean``: RUNNING runs, and the stale ones marked KILLED."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from memgen.tracking.stale import clean  # noqa: PLC0415
    from memgen.tracking.store import tracking_uri  # noqa: PLC0415

    found = clean(MlflowClient(tracking_uri(cfg)), dry_run=action != "clean")
    print(format_report(found))
    killed = sum(s.verdict == "gone" for s in found)
    if action == "clean":
        print(f"{killed} stale run(s) marked KILLED; continue one with: "
              f"memgen train resume=<run id>", file=sys.stderr)
    return 0


def format_report(found: list[Stale]) -> str:
    """One line per RUNNING run: what ``clean`` did with it."""
    if not found:
        return "no RUNNING runs"
    said = {"gone": "process gone: marked KILLED", "alive": "running (process alive)",
            "elsewhere": "on another host: left as is", "unknown": "no pid recorded: left as is"}
    return "\n".join(f"{s.run_id}  {s.name or '-'}  host={s.host} pid={s.pid}  {said[s.verdict]}"
                     for s in found)


def interrupted(argv: Sequence[str] | None) -> int:
    """One line on stderr: which run is KILLED and the command that continues it."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "run"
    keep = [a for a in args[1:] if a.startswith(("tracking.", "output_dir="))]
    run_id = current_run.get("run_id")
    if command == "sweep":
        hint = "run the same command again to resume the study: memgen " + shlex.join(args)
    elif run_id:
        hint = (f"run {run_id} is marked KILLED; continue it with: "
                + shlex.join(["memgen", current_run.get("command", command),
                              f"resume={run_id}", *keep]))
    else:
        hint = "no run was created"
    print(f"memgen: interrupted; {hint}", file=sys.stderr)
    return INTERRUPTED
