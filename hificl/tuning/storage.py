"""Where a study lives: any SQLAlchemy URL Optuna's RDBStorage takes, or `journal:PATH` for a journal file.

SQLite gets a long lock timeout so a few local workers wait for each other instead of failing with
"database is locked"; the journal file (an append-only log with its own NFS-safe lock) suits many workers on a
shared file system; a PostgreSQL/MySQL server suits a cluster.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from hificl.errors import ConfigError

JOURNAL = "journal:"
SQLITE_TIMEOUT_S = 60


def open_storage(spec: str) -> BaseStorage:
    """`sqlite:///results/tune/x.db`, `postgresql://user:pass@host/db`, or `journal:results/tune/x.log`."""
    if spec.startswith(JOURNAL):
        path = Path(spec[len(JOURNAL) :])
        if not path.name:
            raise ConfigError(f"Storage {spec!r} names no journal file; use journal:PATH.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in spec:
        raise ConfigError(f"Storage {spec!r} must be a database URL (sqlite:///x.db, postgresql://..) or journal:PATH.")
    engine_kwargs: dict = {}
    if spec.startswith("sqlite:///"):
        database = sqlite_file(spec)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True  # a cluster database may drop idle connections between trials
    try:
        return RDBStorage(spec, engine_kwargs=engine_kwargs)
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as err:
        raise ConfigError(f"Cannot open storage {spec!r}: {err}") from err


def sqlite_file(spec: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL; None for other storages and in-memory SQLite."""
    if not spec.startswith("sqlite:///"):
        return None
    database = spec[len("sqlite:///") :].split("?", 1)[0]
    return Path(database) if database and database != ":memory:" else None


@contextmanager
def claim_lock(spec: str) -> Iterator[None]:
    """Serialise trial claims on SQLite; a no-op elsewhere.

    Optuna moves a trial WAITING -> RUNNING by reading its state, then writing it. PostgreSQL/MySQL lock the row
    in between (SELECT ... FOR UPDATE) and the journal orders claims in its log, but pysqlite runs the read
    outside any transaction, so two processes can both claim one trial (seen in tests/test_tune.py). An OS
    file lock beside the database closes that gap; SQLite needs a local file system anyway, where flock works.
    """
    database = sqlite_file(spec)
    if database is None:
        yield
        return
    with open(database.with_name(database.name + ".claim-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
