"""Ctrl-C and SIGTERM stop a run, but never in the middle of a store or checkpoint write.

Python delivers a signal between any two bytecodes. A ``KeyboardInterrupt`` raised inside
SQLAlchemy's commit can leave a SQLite transaction open on a pooled connection; the write that
records the run's end state then waits on that lock and the process hangs (or the run stays
RUNNING). So while a write is in progress (``deferred()``) the handler only records the
signal, and the interrupt is raised as soon as the write returns.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_depth = 0
_pending: int | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that Lightning and the run shut down the same way."""


# Set when a signal became an interrupt: Lightning turns one into ``sys.exit(1)`` (pretrain's
# trainer too), and the command line still reports it as Ctrl-C.
signalled: list[int] = []


def _raise_for(signum: int) -> None:
    signalled.append(signum)
    if signum == signal.SIGTERM:
        raise Terminated("SIGTERM")
    raise KeyboardInterrupt


def _handler(signum: int, _frame) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    _raise_for(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise the interrupt they stand for."""
    global _depth, _pending
    if not _in_main_thread():  # signals only ever reach the main thread
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0 and _pending is not None:
        signum, _pending = _pending, None
        _raise_for(signum)


def hold() -> None:
    """Start holding signals (the open-ended form of ``deferred``, for callback pairs)."""
    global _depth
    if _in_main_thread():
        _depth += 1


def release(raise_pending: bool = True) -> None:
    """End one ``hold``; the last one raises a held interrupt (unless told not to)."""
    global _depth, _pending
    if not _in_main_thread() or _depth == 0:
        return
    _depth -= 1
    if _depth == 0 and _pending is not None:
        signum, _pending = _pending, None
        if raise_pending:
            _raise_for(signum)


def deferring(fn: F) -> F:
    """Decorator form of ``deferred`` for methods that write to the store or to disk."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with deferred():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def interrupts_between_writes() -> Iterator[None]:
    """Install the deferring handler for SIGINT and SIGTERM; restore the previous ones after."""
    global _pending
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _pending = None


class Uninterruptible:
    """Every method call of the wrapped object runs under :func:`deferred`.

    For the run's ``MlflowClient``: an interrupt inside any store call (a read, or a write
    such as ``log_inputs``) can leave a SQLite transaction open on a pooled connection, and
    the store stays locked for every later write of the process (measured: 4 of 100 random
    interrupts inside ``log_batch``/``set_tag`` calls left it locked, even after a GC).
    """

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def held(*args, **kwargs):
            with deferred():
                return value(*args, **kwargs)

        return held


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A block that no Ctrl-C cuts short: one that arrives meanwhile is raised when it ends.

    For library code that mishandles an interrupt (Hydra's config reader turns one into an
    ``UnboundLocalError`` from its ``finally``), so it reaches the command line as Ctrl-C.
    """
    with interrupts_between_writes(), deferred():
        yield


# The run an interrupt should name in its hint: set by ``tracked_run`` while a run is open.
current_run: dict[str, str] = {}


@contextmanager
def signals_ignored() -> Iterator[None]:
    """While the end state is written nothing may interrupt it (a second Ctrl-C included)."""
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                   signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _unraisable(info) -> None:
    """A Ctrl-C that lands in a finalizer is printed as "Exception ignored" with a traceback
    and then lost: send it again, so that it stops the command like any other."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        return
    sys.__unraisablehook__(info)


def install_unraisable_hook() -> None:
    sys.unraisablehook = _unraisable
