"""Runs left behind (RUNNING, process gone): what ``memgen runs clean`` marks KILLED and the
checks ``resume=`` makes first.

A run's process records its host and pid as tags (``memgen.host``, ``memgen.pid``). After a
kill -9, an OOM kill or a power loss the run stays RUNNING; ``memgen runs clean`` marks those
whose process is gone KILLED (runs from other hosts are listed, never touched), and
``resume=<id>`` continues any of them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from memgen.errors import ConfigError
from memgen.runtime.guard import process_alive


@dataclass
class Stale:
    """A RUNNING run and what is known about its process."""

    run_id: str
    name: str
    host: str
    pid: int | None
    verdict: str  # "gone" (marked KILLED), "alive", "elsewhere", "unknown"


def verdict(run: Run, host: str | None = None) -> tuple[str, int | None]:
    """``gone``, ``alive``, ``elsewhere`` (another host) or ``unknown`` (no pid tag)."""
    tags = run.data.tags
    pid_text = tags.get("memgen.pid", "")
    pid = int(pid_text) if pid_text.isdigit() else None
    if pid is None:
        return "unknown", None
    if tags.get("memgen.host") != (host or socket.gethostname()):
        return "elsewhere", pid
    return ("alive" if process_alive(pid) else "gone"), pid


def running_runs(client: MlflowClient) -> list[Run]:
    """Every RUNNING run in every experiment of the store."""
    ids = [e.experiment_id for e in client.search_experiments()]
    return [] if not ids else client.search_runs(ids, filter_string="attributes.status = "
                                                                    "'RUNNING'", max_results=5000)


def clean(client: MlflowClient, dry_run: bool = False) -> list[Stale]:
    """Mark RUNNING runs of this host whose process is gone KILLED; report every RUNNING run."""
    found = []
    for run in running_runs(client):
        state, pid = verdict(run)
        if state == "gone" and not dry_run:
            client.set_tag(run.info.run_id, "memgen.error",
                           "process gone while RUNNING (memgen runs clean)")
            client.set_terminated(run.info.run_id, status="KILLED")
        found.append(Stale(run.info.run_id, run.info.run_name or "",
                           run.data.tags.get("memgen.host", "?"), pid, state))
    return found


def check_resumable(client: MlflowClient, run_id: str, uri: str) -> Run:
    """The run, if ``resume=`` may continue it: not FINISHED, not still running here."""
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - any lookup failure means: no such run here
        raise ConfigError(f"resume: no run '{run_id}' in {uri}") from None
    status = run.info.status
    if status == "FINISHED":
        raise ConfigError(f"resume: run '{run_id}' is FINISHED; start a new run instead "
                          f"(resume continues KILLED, FAILED or stale RUNNING runs)")
    if status == "RUNNING" and verdict(run)[0] == "alive":
        raise ConfigError(f"resume: run '{run_id}' is still running (pid "
                          f"{run.data.tags.get('memgen.pid')}); stop it first")
    return run
