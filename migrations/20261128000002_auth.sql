-- Wharf schema, part 2: users, robots, repository rights, sessions, API tokens and the audit log.
-- No secret is stored in the clear: passwords as Argon2id PHC strings, session ids and API tokens
-- as SHA-256 digests.

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    -- 'user' signs in to the dashboard and the API; 'robot' can only use the registry.
    kind                TEXT NOT NULL CHECK (kind IN ('user', 'robot')),
    -- admin, operator, viewer for users; NULL for robots (their rights are their grants).
    role                TEXT CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash       TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL,
    CHECK ((kind = 'user') = (role IS NOT NULL))
) STRICT;

-- Registry rights per repository: a name or a glob (see auth::policy), and the actions granted.
CREATE TABLE repository_grants (
    id       INTEGER PRIMARY KEY,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pattern  TEXT NOT NULL,
    can_pull   INTEGER NOT NULL DEFAULT 0,
    can_push   INTEGER NOT NULL DEFAULT 0,
    can_delete INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_id, pattern)
) STRICT;

CREATE TABLE sessions (
    id_digest    TEXT PRIMARY KEY,              -- SHA-256 (hex) of the cookie value
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,                 -- synchronizer token of this session
    created_at   INTEGER NOT NULL,              -- unix seconds; absolute timeout counts from here
    last_seen_at INTEGER NOT NULL,              -- unix seconds; idle timeout counts from here
    source       TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,                 -- first characters, shown in listings
    digest       TEXT NOT NULL UNIQUE,          -- SHA-256 (hex) of the whole token
    role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- Append-only: the triggers below refuse UPDATE and DELETE.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_nano INTEGER NOT NULL,
    actor     TEXT NOT NULL,        -- user or robot name, 'local uid N', 'setup', or '-' (anonymous)
    via       TEXT NOT NULL,        -- socket, session, token, basic, setup, anonymous
    source    TEXT NOT NULL,        -- client IP address, or 'socket'
    action    TEXT NOT NULL,        -- e.g. auth.login, user.create, token.revoke, container.start
    target    TEXT NOT NULL,        -- what it acted on, e.g. user:alice, repository:team/app
    outcome   TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed')),
    detail    TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_by_time ON audit_log (time_nano);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
