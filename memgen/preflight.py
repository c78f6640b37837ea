"""What the command line does around a command: checks before a run exists, ``memgen runs``,
and one way to end on Ctrl-C.

Ctrl-C used to end with exit 1 and a traceback in some places (Lightning turns it into
``sys.exit(1)``; start-up, analysis and sweep workers printed tracebacks) and 130 in others.
Now it is 130 everywhere, the run is KILLED and one line says how to resume it.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from memgen.config import ConfigError
from memgen.tracking.interrupts import current_run

INTERRUPTED = 130
TRAINING_COMMANDS = ("run", "train", "sweep", "pretrain", "replicate")
# Lightning's launcher re-executes the command line for every extra process: a sweep or a
# replicate would start whole copies of itself, so they run their children on one process each.
ONE_PROCESS_COMMANDS = ("sweep", "replicate")


def preflight(command: str, cfg: DictConfig) -> None:
    """The store (damaged, read-only, missing next to artifacts), hardware settings and the
    output folder: each a ConfigError before anything is written."""
    from memgen.tracking.store import check_store  # noqa: PLC0415

    check_store(cfg)
    if command in TRAINING_COMMANDS:
        from memgen.training.devices import check_devices, check_output_dir  # noqa: PLC0415

        processes = check_devices(cfg)
        if command in ONE_PROCESS_COMMANDS and processes > 1:
            raise ConfigError(f"trainer.devices: memgen {command} trains each child on one "
                              f"process; {cfg.trainer.devices!r} would start {processes} "
                              f"(several devices are for memgen run/train)")
        check_output_dir(cfg)


def runs_command(action: str, cfg: DictConfig) -> int:
    """``memgen runs list|clean``: RUNNING runs, and the stale ones marked KILLED."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from memgen.runs import clean, format_report  # noqa: PLC0415
    from memgen.tracking.store import tracking_uri  # noqa: PLC0415

    found = clean(MlflowClient(tracking_uri(cfg)), dry_run=action != "clean")
    print(format_report(found))
    killed = sum(s.verdict == "gone" for s in found)
    if action == "clean":
        print(f"{killed} stale run(s) marked KILLED; continue one with: "
              f"memgen train resume=<run id>", file=sys.stderr)
    return 0


def _unraisable(info) -> None:
    """A Ctrl-C that lands in a finalizer is printed as "Exception ignored" with a traceback
    and then lost: send it again, so that it stops the command like any other."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        return
    sys.__unraisablehook__(info)


def install_unraisable_hook() -> None:
    sys.unraisablehook = _unraisable


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
