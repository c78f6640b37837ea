"""``memgen <command> [key=value ...]``: compose the config, run a stage, print a summary.

Bad input exits with code 2 and one line on stderr before any run is created.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from memgen.config import compose
from memgen.config.validate import override_key
from memgen.errors import ConfigError
from memgen.runtime.boundary import report
from memgen.runtime.interrupts import uninterrupted

COMMANDS = {
    "run": "train, then find neurons, probe, steer and check consistency (the main job)",
    "train": "train a model on a task, tracked in MLflow",
    "sweep": "an Optuna study over config keys (sweep=steering or sweep=training)",
    "replicate": "the same run over replicate.seeds: across-seed CIs and the claims scorecard",
    "analyse": "the whole analysis on the model of a finished run (run=<id>), no training",
    "compare": "two runs or replicates side by side; paired differences over shared seeds",
    "pretrain": "train a small Llama on generic task text and save it as a local LoRA base",
    "ui": "start the MLflow UI on the local store, bound to 127.0.0.1",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one ConfigError line (no usage block): the boundary reports it."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}; see {self.prog} --help")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="memgen", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == "compare":
            cmd.add_argument("runs", nargs=2, metavar="RUN_ID", help="A, then B")
        cmd.add_argument("overrides", nargs="*", help="overrides like trainer.max_epochs=5")
        if name == "ui":
            cmd.add_argument("--port", type=int, default=5000)
    runs = sub.add_parser("runs", help="list RUNNING runs; 'clean' marks those whose process "
                                       "is gone KILLED")
    runs.add_argument("action", choices=["list", "clean"])
    runs.add_argument("overrides", nargs="*", help="e.g. tracking.uri=...")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; Ctrl-C anywhere ends with 130, no traceback and a resume hint."""
    from memgen.commands.runs import interrupted  # noqa: PLC0415
    from memgen.runtime.interrupts import (  # noqa: PLC0415
        current_run,
        install_unraisable_hook,
    )

    current_run.clear()
    install_unraisable_hook()
    from memgen.runtime.interrupts import signalled  # noqa: PLC0415

    signalled.clear()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return interrupted(argv) if _rank_zero() else 130
    except SystemExit as exc:  # Lightning's exit(1) after a Ctrl-C it caught itself
        if exc.code == 1 and signalled:
            return interrupted(argv) if _rank_zero() else 130
        raise


def _rank_zero() -> bool:
    """Rank 0 speaks for a multi-process job (summary, resume hint); other ranks stay quiet."""
    from memgen.training.distributed import is_rank_zero  # noqa: PLC0415

    return is_rank_zero()


def _main(argv: Sequence[str] | None = None) -> int:
    """The error boundary: every exception becomes one line (memgen/runtime/boundary.py)."""
    try:
        return _dispatch(argv)
    except Exception as exc:  # noqa: BLE001 - the boundary: one line, exit 2 (1 once a run exists)
        return report(exc)


def _dispatch(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from memgen.runtime.quiet import quiet_library_noise  # noqa: PLC0415

    # Ctrl-C must reach the run even when the parent shell started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # held from Ctrl-C: Hydra turns one inside its file read into a crash, and setLevel
    # keeps logging's module lock if cut (runtime/quiet.py)
    with uninterrupted():
        quiet_library_noise()
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema set-up chatter
        cfg = compose(args.overrides)
    from memgen.commands.preflight import preflight  # noqa: PLC0415
    from memgen.commands.runs import runs_command  # noqa: PLC0415

    if args.command in ("analyse", "compare") or (args.command == "replicate"
                                                  and cfg.replicate.models):
        from memgen.commands.analyse import require_store  # noqa: PLC0415 - they read runs

        require_store(cfg, {"analyse": "run", "compare": "compare"}.get(
            args.command, "replicate.models"))
    preflight(args.command, cfg)
    if args.command == "runs":
        return runs_command(args.action, cfg)
    if cfg.resume:
        from memgen.tracking.load import resumed_config  # noqa: PLC0415

        with uninterrupted():  # rank 0 has reopened the run: the others only read it
            cfg = resumed_config(cfg, args.overrides, check=_rank_zero())
    if args.command == "ui":
        from memgen.commands.ui import serve  # noqa: PLC0415

        serve(cfg, args.port)
    if args.command == "sweep":
        from memgen.commands.sweep import sweep  # noqa: PLC0415

        metrics, objects = sweep(cfg)
    elif args.command == "replicate":
        from memgen.commands.replicate import replicate  # noqa: PLC0415

        seeds_given = any(override_key(o) == "replicate.seeds" for o in args.overrides)
        metrics, objects = replicate(cfg, seeds_given)
    elif args.command == "analyse":
        from memgen.commands.analyse import analyse  # noqa: PLC0415

        metrics, objects = analyse(cfg)
    elif args.command == "compare":
        from memgen.commands.compare import compare  # noqa: PLC0415

        metrics, objects = compare(cfg, *args.runs)
    elif args.command == "pretrain":
        from memgen.commands.pretrain import pretrain  # noqa: PLC0415

        metrics, objects = pretrain(cfg)
    else:
        from memgen.commands import run  # noqa: PLC0415

        metrics, objects = (run.run if args.command == "run" else run.train)(cfg)
    if not _rank_zero():
        return 0
    from memgen.commands.summary import print_summary  # noqa: PLC0415

    print_summary(args.command, metrics, objects, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
