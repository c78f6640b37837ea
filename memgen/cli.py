"""``memgen <command> [key=value ...]``: compose the config, run a stage, print a summary.

Bad input exits with code 2 and one line on stderr before any run is created.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence

from memgen.boundary import report
from memgen.config import ConfigError, compose
from memgen.tracking.interrupts import uninterrupted

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


def check_port(port: int) -> None:
    """``memgen ui --port``: in range and free, checked before the server replaces this process
    (a server that cannot bind printed a traceback and exited 0)."""
    import socket  # noqa: PLC0415

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: expected a port in 1..65535, got {port}")
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            other = port + 1 if port < 65535 else 5000
            raise ConfigError(f"--port: 127.0.0.1:{port} is not free ({exc.strerror or exc}); "
                              f"expected a free port, e.g. --port {other}") from None


def ui_command(cfg, port: int) -> list[str]:
    """The lean MLflow server: one worker, no background job runners, loopback only.

    Artifacts of new experiments are proxied (``--artifacts-destination``), so clients on other
    machines can log them; experiments made on the local store keep their local paths.
    """
    from memgen.tracking.store import artifact_root, tracking_uri  # noqa: PLC0415

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri(cfg),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    root = artifact_root(cfg)
    if root:
        cmd += ["--artifacts-destination", root]
    return cmd


def print_summary(command: str, metrics: dict[str, float], objects: dict, cfg) -> None:
    """The headline (about 20 lines; every metric with ``tracking.full_summary=true``) and
    the link to the run's page."""
    from memgen.tracking.headline import headline  # noqa: PLC0415
    from memgen.tracking.links import run_url  # noqa: PLC0415
    from memgen.tracking.store import tracking_uri  # noqa: PLC0415

    full = bool(cfg.tracking.get("full_summary"))
    if command in ("run", "train", "analyse") and not full:
        print("\n" + "\n".join(headline(metrics, objects.get("claims"))))
    elif "summary" in objects:
        print(objects["summary"])
    if command == "replicate":  # the scorecard is the summary; aggregates are in the run
        print("\nper-metric mean and 95% CI: replicate/aggregates.csv and report.html")
    if full:
        shown = {k: v for k, v in sorted(metrics.items()) if not k.endswith(("_step", "_epoch"))}
        width = max((len(k) for k in shown), default=10)
        print("\n" + "metric".ljust(width) + "  value")
        print("-" * width + "  ------")
        for key, value in shown.items():
            print(f"{key.ljust(width)}  {value:.4g}")
    elif command in ("run", "train", "analyse"):
        print("(every metric: tracking.full_summary=true; all results: report.html)")
    run_id = objects.get("run_id", "")
    print(f"\nrun {run_id} in {tracking_uri(cfg)}")
    experiment_id = objects.get("experiment_id") or _experiment_of(cfg, run_id)
    if experiment_id:
        print(f"run page: {run_url(cfg, experiment_id, run_id)}")
    if not str(cfg.tracking.uri or "").startswith("http"):
        print("open it with:  make ui   (or: "
              + shlex.join(ui_command(cfg, 5000)[1:]).replace("-m mlflow", "mlflow") + ")")


def _experiment_of(cfg, run_id: str) -> str | None:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from memgen.tracking.store import tracking_uri  # noqa: PLC0415

    try:
        return MlflowClient(tracking_uri(cfg)).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - only the link is missing
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; Ctrl-C anywhere ends with 130, no traceback and a resume hint."""
    from memgen.preflight import current_run, install_unraisable_hook, interrupted  # noqa: PLC0415

    current_run.clear()
    install_unraisable_hook()
    from memgen.tracking.interrupts import signalled  # noqa: PLC0415

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
    """The error boundary: every exception becomes one line (memgen/boundary.py)."""
    try:
        return _dispatch(argv)
    except Exception as exc:  # noqa: BLE001 - the boundary: one line, exit 2 (1 once a run exists)
        return report(exc)


def _dispatch(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from memgen.tracking.quiet import quiet_library_noise  # noqa: PLC0415

    # Ctrl-C must reach the run even when the parent shell started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # held from Ctrl-C: Hydra turns one inside its file read into a crash, and setLevel
    # keeps logging's module lock if cut (tracking/quiet.py)
    with uninterrupted():
        quiet_library_noise()
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema set-up chatter
        cfg = compose(args.overrides)
    from memgen.preflight import preflight, runs_command  # noqa: PLC0415

    if args.command in ("analyse", "compare") or (args.command == "replicate"
                                                  and cfg.replicate.models):
        from memgen.analyse import require_store  # noqa: PLC0415 - they read runs

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
        check_port(args.port)
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        os.execvpe(sys.executable, ui_command(cfg, args.port), env)
    if args.command == "sweep":
        from memgen.sweeps.command import sweep  # noqa: PLC0415

        metrics, objects = sweep(cfg)
    elif args.command == "replicate":
        from memgen.replicates.command import replicate  # noqa: PLC0415

        metrics, objects = replicate(cfg)
    elif args.command == "analyse":
        from memgen.analyse import analyse  # noqa: PLC0415

        metrics, objects = analyse(cfg)
    elif args.command == "compare":
        from memgen.compare import compare  # noqa: PLC0415

        metrics, objects = compare(cfg, *args.runs)
    elif args.command == "pretrain":
        from memgen.pretrain import pretrain  # noqa: PLC0415

        metrics, objects = pretrain(cfg)
    else:
        from memgen import pipeline  # noqa: PLC0415

        metrics, objects = (pipeline.run if args.command == "run" else pipeline.train)(cfg)
    if not _rank_zero():
        return 0
    print_summary(args.command, metrics, objects, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
