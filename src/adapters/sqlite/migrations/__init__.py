"""Versioned schema migrations: `NNNN_name.sql` scripts in this package, applied in order.

Rules for new scripts: never edit a released one, add the next number instead; no BEGIN or
COMMIT inside (the runner wraps all pending scripts in one transaction); a table rebuild must
keep foreign keys valid, since `PRAGMA foreign_key_check` runs before the commit.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from adapters.sqlite.connection import connect

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
) STRICT
"""


class SchemaError(Exception):
    """The database's schema cannot be used by this version of chatcore."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The package's scripts in order; their numbers must run 1, 2, 3, ... with no gap."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"migration numbers must be 1..n without gaps: {[m.version for m in found]}")
    return found


MIGRATIONS = load_migrations()
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database; 0 when it was never migrated."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def apply_migrations(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Bring the schema up to date in one transaction; returns the version reached.

    The connection must be in autocommit mode (`autocommit=True`). `BEGIN IMMEDIATE` takes the
    write lock before the version is read, so two processes starting together migrate once.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    latest = migrations[-1].version if migrations else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_BOOTSTRAP)
        version = current_version(conn)
        if version > latest:
            raise SchemaError(
                f"the database has schema version {version}, newer than this chatcore ({latest})"
            )
        for migration in migrations[version:]:
            conn.executescript(migration.sql)  # with autocommit=True this issues no COMMIT
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(UTC).isoformat()),
            )
        problems = conn.execute("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise SchemaError(f"migration left rows violating foreign keys: {problems[:5]}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return max(version, latest)


def migrate(path: str | Path) -> int:
    """Create or upgrade the database file at `path`; returns its schema version.

    Used by `chatcore init-db`, and by `SqliteDatabase.open()` unless told not to migrate.
    """
    conn = connect(path)
    try:
        return apply_migrations(conn)
    finally:
        conn.close()
