"""The in-memory store: committed tables, and per-unit-of-work staged changes.

Units of work run one at a time (a lock per store), so every commit sees the state its reads
saw; staged changes are copies, so a use case that fails half-way leaves the store untouched.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from chatcore.domain.chats import Chat
from chatcore.domain.events import EventRecord
from chatcore.domain.groups import Group
from chatcore.domain.messages import Message, ReadMarker
from chatcore.domain.users import PasswordCredential, User


@dataclass
class MemoryStore:
    users: dict[str, User] = field(default_factory=dict)
    credentials: dict[str, PasswordCredential] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    chats: dict[str, Chat] = field(default_factory=dict)
    messages: dict[tuple[str, int], Message] = field(default_factory=dict)
    read_markers: dict[tuple[str, str], ReadMarker] = field(default_factory=dict)
    # The event log: every record in commit order, and the last seq of each stream.
    log: list[EventRecord] = field(default_factory=list)
    stream_seqs: dict[str, int] = field(default_factory=dict)
    dispatched: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_DELETED = object()


class Staged[K, V]:
    """One table as one unit of work sees it: committed rows overlaid with its own changes."""

    def __init__(self, rows: dict[K, V]) -> None:
        self._rows = rows
        self._changes: dict[K, object] = {}

    def get(self, key: K) -> V | None:
        if key in self._changes:
            value = self._changes[key]
            return None if value is _DELETED else copy.deepcopy(value)  # type: ignore[return-value]
        row = self._rows.get(key)
        return copy.deepcopy(row) if row is not None else None

    def put(self, key: K, value: V) -> None:
        self._changes[key] = copy.deepcopy(value)

    def delete(self, key: K) -> None:
        self._changes[key] = _DELETED

    def _peek(self, key: K) -> V | None:
        """The row as stored, not a copy: for looking only, never for handing out."""
        if key in self._changes:
            value = self._changes[key]
            return None if value is _DELETED else value  # type: ignore[return-value]
        return self._rows.get(key)

    def count(self, keys: Iterable[K], predicate: Callable[[V], bool]) -> int:
        return sum(1 for key in keys if (row := self._peek(key)) is not None and predicate(row))

    def find(self, predicate: Callable[[V], bool], keys: Iterable[K] | None = None) -> Iterator[V]:
        """Copies of the rows matching `predicate`, among `keys` (default: every row)."""
        for key in self._rows.keys() | self._changes.keys() if keys is None else keys:
            row = self._peek(key)
            if row is not None and predicate(row):
                yield copy.deepcopy(row)

    def keys_where(self, predicate: Callable[[V], bool]) -> list[K]:
        """The keys of the rows matching `predicate`, sorted, without copying any row."""
        keys = self._rows.keys() | self._changes.keys()
        return sorted(k for k in keys if (row := self._peek(k)) is not None and predicate(row))  # type: ignore[type-var]

    def apply(self) -> None:
        for key, value in self._changes.items():
            if value is _DELETED:
                self._rows.pop(key, None)
            else:
                self._rows[key] = value  # type: ignore[assignment]
        self._changes.clear()
