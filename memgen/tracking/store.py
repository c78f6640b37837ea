"""Where runs go: the local SQLite store under ``mlruns/`` by default, or ``tracking.uri``."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from memgen.config import PROJECT_ROOT
from memgen.errors import ConfigError


def default_root() -> Path:
    """``$MEMGEN_MLRUNS`` or ``<project>/mlruns``."""
    return Path(os.environ.get("MEMGEN_MLRUNS", PROJECT_ROOT / "mlruns")).resolve()


def tracking_uri(cfg: DictConfig) -> str:
    """``tracking.uri`` or ``sqlite:///<project>/mlruns/mlflow.db``."""
    return cfg.tracking.uri or f"sqlite:///{default_root() / 'mlflow.db'}"


def artifact_root(cfg: DictConfig) -> str | None:
    """Artifact location for new experiments; ``None`` lets a server decide."""
    if cfg.tracking.artifact_root:
        return Path(cfg.tracking.artifact_root).resolve().as_uri()
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    if urlparse(uri).scheme in ("http", "https"):
        return None  # the server stores (and serves) artifacts
    return (default_root() / "artifacts").as_uri()  # a database backend: local artifacts


def check_store(cfg: DictConfig, timeout_s: float = 5.0) -> None:
    """Fail fast, before any work, if the store is unwritable or a server does not answer."""
    uri = tracking_uri(cfg)
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"tracking.uri: cannot create {folder} ({exc.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking.uri: {folder} is not writable")
        check_sqlite_file(Path(uri[len("sqlite:///"):]))
        init_sqlite(uri, folder / ".mlflow-init.lock")
    elif parsed.scheme in ("http", "https"):
        import urllib.request  # noqa: PLC0415 - only for a server store

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                pass
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            raise ConfigError(f"tracking.uri: {uri} is not reachable ({exc})") from None
    elif parsed.scheme in ("postgresql", "mysql", "file", ""):
        if parsed.scheme in ("file", ""):
            raise ConfigError(f"tracking.uri: the file store is not supported by MLflow 3 "
                              f"(got {uri!r}); use sqlite:///path/mlflow.db or a server")
    else:
        raise ConfigError(f"tracking.uri: unsupported scheme {parsed.scheme!r} "
                          f"(expected sqlite, postgresql, mysql, http or https)")


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_sqlite_file(db: Path) -> None:
    """A damaged store is named in one line instead of a 216-line SQLAlchemy traceback.

    Read-only, truncated or not-a-database files fail here; a missing ``mlflow.db`` next to
    existing run artifacts is an error too (recreating it empty would orphan every run), while
    the first run on an empty ``mlruns/`` still creates it.
    """
    import sqlite3  # noqa: PLC0415

    if not db.exists():
        artifacts = db.parent / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            raise ConfigError(f"tracking.uri: {db} is missing but {artifacts} holds runs; "
                              f"restore the database or point tracking.uri at a new folder")
        return
    if not db.is_file():
        raise ConfigError(f"tracking.uri: {db} is not a file")
    if not os.access(db, os.R_OK | os.W_OK):
        raise ConfigError(f"tracking.uri: {db} is read-only; make it writable "
                          f"(chmod u+w) or point tracking.uri elsewhere")
    with open(db, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise ConfigError(f"tracking.uri: {db} is not an SQLite database")
    if not head:
        return  # an empty file: SQLite treats it as a new database
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            verdict = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"tracking.uri: {db} is damaged ({exc})") from None
    if verdict != "ok":
        raise ConfigError(f"tracking.uri: {db} is damaged ({verdict})")


def init_sqlite(uri: str, lock_path: Path) -> None:
    """Create or migrate the SQLite schema once, under a file lock.

    Several processes opening a fresh store at once would each run MLflow's migrations and
    collide; the first one does it while the others wait, then all just connect.
    """
    import fcntl  # noqa: PLC0415 - POSIX only, and only for a local store

    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - seconds to load: only on a new store

    try:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError as exc:
        raise ConfigError(f"tracking.uri: cannot open {uri} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy / MLflow: name the file, one line
        lines = str(exc).strip().splitlines()
        raise ConfigError(f"tracking.uri: cannot open {uri} "
                          f"({lines[0][:200] if lines else type(exc).__name__})") from None
