"""Signals are held while a write is in progress and raised as soon as it ends."""

from __future__ import annotations

import os
import signal

import pytest

from memgen.tracking.interrupts import (
    Terminated,
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
