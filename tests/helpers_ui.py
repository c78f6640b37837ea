"""`memgen ui` on a free loopback port for the tests that talk to a real MLflow server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def memgen_ui(*overrides: str, timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the server, wait until /health answers, yield (url, process), stop it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "memgen.cli", "ui", *overrides,
                                "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(process.stderr.read()[-2000:]) from None
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)
