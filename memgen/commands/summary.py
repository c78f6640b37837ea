"""What a command prints when it ends: the headline (or every metric), and where the run is."""

from __future__ import annotations

import shlex

from memgen.commands.ui import ui_command
from memgen.reporting.headline import headline
from memgen.tracking.links import run_url
from memgen.tracking.store import tracking_uri


def print_summary(command: str, metrics: dict[str, float], objects: dict, cfg) -> None:
    """The headline (about 20 lines; every metric with ``tracking.full_summary=true``) and
    the link to the run's page."""
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

    try:
        return MlflowClient(tracking_uri(cfg)).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - only the link is missing
        return None
