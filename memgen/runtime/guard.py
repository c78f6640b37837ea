"""``python -m memgen.runtime.guard <uri> <run_id> <pid>``: the end state of a multi-process
run when its rank 0 is killed.

Lightning's process observer answers a dead rank (kill -9, OOM) with SIGKILL to every other
rank, rank 0 included, so nothing in the job can record the run's end. This small detached
process waits for rank 0's pid to go; if the run is still RUNNING then, it is marked KILLED.
It exits as soon as the run has an end state (rank 0 recorded it itself).
"""

from __future__ import annotations

import os
import sys
import time

CHECK_RUN_EVERY_S = 10.0


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def status(uri: str, run_id: str) -> str | None:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id).info.status
    except Exception:  # noqa: BLE001 - the store is busy or gone: look again later
        return None


def guard(uri: str, run_id: str, pid: int, poll_s: float = 0.5) -> str:
    """Wait for ``pid`` to exit (or the run to end); returns what was done."""
    last_check = time.monotonic()
    while process_alive(pid):
        time.sleep(poll_s)
        if time.monotonic() - last_check >= CHECK_RUN_EVERY_S:
            last_check = time.monotonic()
            if status(uri, run_id) not in (None, "RUNNING"):
                return "ended by its process"
    for _ in range(10):  # a store locked by a dying writer is retried
        state = status(uri, run_id)
        if state is not None:
            break
        time.sleep(1.0)
    if state != "RUNNING":
        return "ended by its process"
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(tracking_uri=uri)
    client.set_tag(run_id, "memgen.error", f"rank 0 (pid {pid}) was killed with the run "
                                           f"RUNNING (a rank died: Lightning kills all)")
    client.set_terminated(run_id, status="KILLED")
    return "marked KILLED"


if __name__ == "__main__":
    guard(sys.argv[1], sys.argv[2], int(sys.argv[3]))
