"""Signals are held while a write is in progress and raised as soon as it ends."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading

import pytest

from memgen.tracking.interrupts import (
    Terminated,
    Uninterruptible,
    deferred,
    interrupts_between_writes,
    signals_ignored,
)


def test_sigint_inside_a_write_is_raised_after_the_write_completes():
    finished = []
    with interrupts_between_writes():
        with pytest.raises(KeyboardInterrupt):
            with deferred():
                os.kill(os.getpid(), signal.SIGINT)
                with deferred():  # nested writes: held until the outermost ends
                    finished.append("inner")
                finished.append("outer")
        assert finished == ["inner", "outer"]


def test_sigterm_becomes_terminated_and_outside_writes_raises_at_once():
    with interrupts_between_writes():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        with pytest.raises(Terminated):
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)


def test_handlers_are_restored_and_a_write_without_a_signal_raises_nothing():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts_between_writes():
        with deferred():
            pass
        with signals_ignored():
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing raised
        assert signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, before[0])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _store_is_free(db) -> bool:
    """Whether another connection can take the write lock at once."""
    con = sqlite3.connect(db, timeout=0.5)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


@pytest.mark.slow
def test_ctrl_c_at_random_moments_of_store_calls_never_leaves_the_store_locked(tmp_path):
    """Without the wrapper, 4 of 100 such interrupts left SQLite locked for good (every later
    write of the process failed with "database is locked"); with it, none may."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    client = Uninterruptible(MlflowClient(f"sqlite:///{db}"))
    run_id = client.create_run(client.create_experiment(
        "x", artifact_location=(tmp_path / "artifacts").as_uri())).info.run_id
    rng = random.Random(0)
    interrupted, step = 0, 0
    with interrupts_between_writes():
        for _ in range(150):
            timer = threading.Timer(rng.uniform(0, 0.02),
                                    lambda: os.kill(os.getpid(), signal.SIGINT))
            timer.start()
            try:
                while True:  # writes and reads until the interrupt lands
                    step += 1
                    client.log_batch(run_id, metrics=[Metric("m", 1.0, 0, step)])
                    client.set_tag(run_id, "t", str(step))
                    client.get_run(run_id)
            except KeyboardInterrupt:
                interrupted += 1
            timer.join()
            assert _store_is_free(db), f"locked after {interrupted} interrupts"
    assert interrupted == 150
    client.set_tag(run_id, "after", "written")  # the store takes writes
    assert client.get_run(run_id).data.tags["after"] == "written"
