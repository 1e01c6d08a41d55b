"""PyMongo's failures, told in the ports' words: DuplicateKey, ConcurrentUpdate, StoreUnavailable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WaitQueueTimeoutError,
    WTimeoutError,
)

from chatcore.ports.errors import ConcurrentUpdate, DuplicateKey, StoreUnavailable


class MongoSetupError(RuntimeError):
    """The server cannot give chatcore what it needs (transactions); fix the deployment."""


# Unique indexes whose violation means "this key is taken" (the ports' DuplicateKey names).
# Any other unique violation (_id, (chat_id, seq), (stream_id, seq)) is a lost race.
KEY_OF_INDEX = {
    "users_email": "email",
    "chats_direct_key": "direct_key",
    "messages_client_msg_id": "client_msg_id",
}

_WRITE_CONFLICT = 112
_NO_SUCH_TRANSACTION = 251
_TRANSACTION_TOO_OLD = 225
_LOCK_TIMEOUT = 24
_MAX_TIME_EXPIRED = 50
_RACE_CODES = {_WRITE_CONFLICT, _NO_SUCH_TRANSACTION, _TRANSACTION_TOO_OLD, _LOCK_TIMEOUT}


def _duplicate(error: DuplicateKeyError) -> Exception:
    details = error.details or {}
    text = str(details.get("errmsg") or error)
    for index, key in KEY_OF_INDEX.items():
        if f"index: {index} " in text or text.endswith(f"index: {index}"):
            return DuplicateKey(key)
    pattern = details.get("keyPattern") or {}
    if set(pattern) == {"email"}:
        return DuplicateKey("email")
    if set(pattern) == {"direct_key"}:
        return DuplicateKey("direct_key")
    if "client_msg_id" in pattern:
        return DuplicateKey("client_msg_id")
    return ConcurrentUpdate(f"unique key taken by a concurrent write: {text}")


def _is_race(error: OperationFailure) -> bool:
    if error.code in _RACE_CODES or error.has_error_label("TransientTransactionError"):
        return True
    # mongoeco reports commit-time conflicts without a code or label.
    return "write conflict" in str(error).lower()


def translate(error: PyMongoError) -> Exception:
    """The port error for a driver error (itself, for a bug such as a malformed query)."""
    if isinstance(error, DuplicateKeyError):
        return _duplicate(error)
    if isinstance(error, ConnectionFailure | WaitQueueTimeoutError | ExecutionTimeout | WTimeoutError):
        return StoreUnavailable(f"the database is unavailable: {type(error).__name__}")
    if error.timeout:  # client-side operation timeout (timeoutMS)
        return StoreUnavailable(f"the database did not answer in time: {type(error).__name__}")
    if error.has_error_label("UnknownTransactionCommitResult"):
        # The commit may or may not have landed: never acknowledge it; retries are idempotent.
        return StoreUnavailable("the commit's outcome is unknown")
    if isinstance(error, OperationFailure):
        if _is_race(error):
            return ConcurrentUpdate(str(error))
        if error.code == _MAX_TIME_EXPIRED:
            return StoreUnavailable("the database did not answer in time")
    return error


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except PyMongoError as error:
        port_error = translate(error)
        if port_error is error:
            raise
        raise port_error from error
