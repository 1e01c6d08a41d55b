-- Authentication state that must outlive the process: mailed one-time tokens, sessions
-- (refresh-token families) and consecutive login failures. Only hashes of secrets are stored:
-- codes as HMACs keyed by the server, link and refresh tokens as SHA-256.
-- Times are INTEGER microseconds since the Unix epoch (UTC), so that SQL compares instants.

CREATE TABLE one_time_tokens (
    attempt_id      TEXT PRIMARY KEY,
    purpose         TEXT NOT NULL,
    email           TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    code_hash       TEXT NOT NULL,
    link_hash       TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    consumed_at     INTEGER  -- NULL while live
) STRICT;
-- One token per address and purpose: a new request deletes the older one first.
CREATE UNIQUE INDEX one_time_tokens_by_email ON one_time_tokens (email, purpose);
CREATE INDEX one_time_tokens_by_expiry ON one_time_tokens (expires_at);

CREATE TABLE auth_sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    refresh_hash   TEXT NOT NULL UNIQUE,  -- the current refresh token's hash
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,  -- the family's absolute end
    method         TEXT NOT NULL,
    generation     INTEGER NOT NULL DEFAULT 0,
    ip             TEXT,
    user_agent     TEXT,
    revoked_at     INTEGER,
    revoked_reason TEXT
) STRICT;
CREATE INDEX auth_sessions_by_user ON auth_sessions (user_id, created_at, id);
CREATE INDEX auth_sessions_by_expiry ON auth_sessions (expires_at);

-- Refresh hashes rotated away, kept until their session is purged, so a replay is recognised.
CREATE TABLE auth_superseded_refresh (
    refresh_hash TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX auth_superseded_refresh_by_session ON auth_superseded_refresh (session_id);

-- Consecutive failed logins per key (a normalised address).
CREATE TABLE login_failures (
    key             TEXT PRIMARY KEY,
    count           INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
