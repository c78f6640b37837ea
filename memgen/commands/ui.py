"""``memgen ui``: the MLflow UI on the local store, bound to 127.0.0.1."""

from __future__ import annotations

import os
import socket
import sys

from memgen.errors import ConfigError
from memgen.tracking.store import artifact_root, tracking_uri


def check_port(port: int) -> None:
    """``memgen ui --port``: in range and free, checked before the server replaces this process
    (a server that cannot bind would print a traceback and exit 0)."""
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
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri(cfg),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    root = artifact_root(cfg)
    if root:
        cmd += ["--artifacts-destination", root]
    return cmd


def serve(cfg, port: int) -> None:
    """Check the port, then replace this process with the server (it never returns)."""
    check_port(port)
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execvpe(sys.executable, ui_command(cfg, port), env)
