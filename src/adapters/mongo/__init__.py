"""MongoDB adapters (PyMongo's async API): repositories, unit of work and event log.

The production store. `connect` builds a fail-fast client, `MongoStore` holds the database,
`check_server` refuses a server without transactions, `init_indexes` is `chatcore init-db`,
and `mongo_uow_factory` / `MongoEventLog` plug it into the core (`mongo_core` does it all).
"""

from adapters.mongo.database import (
    INDEXES,
    MongoStore,
    ServerInfo,
    check_server,
    connect,
    ensure_ttl_index,
    init_indexes,
    open_store,
    probe_transactions,
    ttl_index,
)
from adapters.mongo.errors import MongoSetupError
from adapters.mongo.kit import MillisecondClock, MongoCore, mongo_core
from adapters.mongo.unit_of_work import MongoEventLog, MongoUnitOfWork, mongo_uow_factory

__all__ = [
    "INDEXES",
    "MillisecondClock",
    "MongoCore",
    "MongoEventLog",
    "MongoSetupError",
    "MongoStore",
    "MongoUnitOfWork",
    "ServerInfo",
    "check_server",
    "connect",
    "ensure_ttl_index",
    "init_indexes",
    "mongo_core",
    "mongo_uow_factory",
    "open_store",
    "probe_transactions",
    "ttl_index",
]
