"""Signals are held while a write is in progress and raised as soon as it ends."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import threading

import pytest

from memgen.runtime.interrupts import (
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
            try:
                timer.start()  # a short delay can fire before start() returns
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


def _lock_is_free() -> bool:
    """Whether another thread can take logging's module lock (and give it back)."""
    got = []

    def take_and_give_back() -> None:
        got.append(logging._lock.acquire(timeout=2))
        if got[-1]:
            logging._lock.release()

    other = threading.Thread(target=take_and_give_back)
    other.start()
    other.join()
    return got == [True]


@pytest.mark.slow
def test_ctrl_c_inside_any_set_level_of_a_run_never_leaves_logging_locked(tmp_path,
                                                                           monkeypatch):
    """``Logger.setLevel`` holds logging's module lock without a ``finally``: a Ctrl-C inside
    it kept the lock, the next thread to log (MLflow's system-metrics sampler) blocked, and
    joining that thread hung the run. Each ``setLevel`` call a run makes (imports done) gets
    the Ctrl-C in turn; every one must leave the lock free."""
    from memgen.cli import main
    from tests.conftest import tiny_overrides

    args = ["train", *tiny_overrides(tmp_path, **{"trainer.max_epochs": 1})]
    assert main(args) == 0  # imports (whose loggers call setLevel once) done
    real = logging.Manager._clear_cache  # what setLevel calls while holding the lock
    calls: list[bool] = []
    cut_at: list[int] = []

    def cut_inside(self):  # what a Ctrl-C arriving mid-call does to the real one
        calls.append(True)
        logging._lock.acquire()
        if cut_at and len(calls) == cut_at[0]:
            os.kill(os.getpid(), signal.SIGINT)
        logging._lock.release()
        real(self)

    monkeypatch.setattr(logging.Manager, "_clear_cache", cut_inside)
    assert main(args) == 0
    per_run = len(calls)
    assert per_run >= 1
    for nth in range(1, per_run + 1):
        calls.clear()
        cut_at[:] = [nth]
        assert main(args) == 130
        assert _lock_is_free(), f"logging's lock held after a Ctrl-C in setLevel call {nth}"
