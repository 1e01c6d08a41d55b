-- The first schema: aggregates as msgspec-JSON documents in `data`, beside the columns their
-- queries need; the event log (outbox) with per-stream gapless seqs kept in `streams`.
-- Aggregates refer to one another by id without foreign keys, as the memory adapter does;
-- the index tables this adapter derives from a document (chat_members, group_members) and
-- messages do reference their parent.

CREATE TABLE users (
    id    TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,  -- normalised by the domain
    data  TEXT NOT NULL
) STRICT;

CREATE TABLE credentials (
    user_id TEXT PRIMARY KEY,
    data    TEXT NOT NULL
) STRICT;

CREATE TABLE groups (
    id   TEXT PRIMARY KEY,
    data TEXT NOT NULL
) STRICT;

-- Derived from Group.members, for groups.list_for_user.
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);

CREATE TABLE chats (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    direct_key TEXT UNIQUE,  -- NULL for group chats; one direct chat per pair
    group_id   TEXT,
    last_seq   INTEGER NOT NULL,
    data       TEXT NOT NULL
) STRICT;
CREATE INDEX chats_by_group ON chats (group_id, id) WHERE group_id IS NOT NULL;

-- Derived from Chat.members, for chats.list_for_user.
CREATE TABLE chat_members (
    chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX chat_members_by_user ON chat_members (user_id, chat_id);

-- A rowid table: bodies and edit histories make rows too wide for WITHOUT ROWID.
CREATE TABLE messages (
    chat_id       TEXT NOT NULL REFERENCES chats (id) DEFERRABLE INITIALLY DEFERRED,
    seq           INTEGER NOT NULL,
    author_id     TEXT NOT NULL,
    client_msg_id TEXT,  -- NULLs never collide
    deleted       INTEGER NOT NULL DEFAULT 0,
    data          TEXT NOT NULL,
    PRIMARY KEY (chat_id, seq),
    UNIQUE (chat_id, author_id, client_msg_id)
) STRICT;
-- Covers count_unread: a range over (chat_id, seq) of live messages, reading no row.
CREATE INDEX messages_unread ON messages (chat_id, seq, author_id) WHERE deleted = 0;

CREATE TABLE read_markers (
    chat_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (chat_id, user_id)
) STRICT, WITHOUT ROWID;

-- The last seq handed out in each event stream (a chat, a group or a user).
CREATE TABLE streams (
    stream_id TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE events (
    pos         INTEGER PRIMARY KEY,  -- commit order: writers are serialised
    id          TEXT NOT NULL UNIQUE,
    stream_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,  -- ISO 8601 with offset
    data        TEXT NOT NULL,  -- the tagged msgspec event
    dispatched  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (stream_id, seq)
) STRICT;
CREATE INDEX events_undispatched ON events (pos) WHERE dispatched = 0;
