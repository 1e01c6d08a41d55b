"""SQLite adapters: repositories, unit of work and event log on one WAL-mode database file.

The embedded default. `migrate(path)` creates or upgrades a database file; `SqliteDatabase`
owns the connections; `sqlite_uow_factory` and `SqliteEventLog` plug it into the core.
"""

from adapters.sqlite.database import SqliteDatabase
from adapters.sqlite.migrations import LATEST_VERSION, SchemaError, migrate
from adapters.sqlite.unit_of_work import (
    SqliteEventLog,
    SqliteReadUnitOfWork,
    SqliteUnitOfWork,
    sqlite_read_uow_factory,
    sqlite_uow_factory,
)

__all__ = [
    "LATEST_VERSION",
    "SchemaError",
    "SqliteDatabase",
    "SqliteEventLog",
    "SqliteReadUnitOfWork",
    "SqliteUnitOfWork",
    "migrate",
    "sqlite_read_uow_factory",
    "sqlite_uow_factory",
]
