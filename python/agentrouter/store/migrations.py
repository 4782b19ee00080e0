"""Versioned schema migrations, applied in order, each in the text of both backends.

SQLite keeps the version in ``PRAGMA user_version``; PostgreSQL in the one-row table
``agentrouter_schema``. Append new migrations; never edit one that has shipped. The
two texts of a migration describe the same tables (PostgreSQL's types: BIGINT for
counts and ids, DOUBLE PRECISION for times and latencies, BYTEA for digests).
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    summary: str
    sqlite: str
    postgres: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "keys and their usage totals",
        sqlite="""
    CREATE TABLE keys (
        id          TEXT PRIMARY KEY,
        name        TEXT,
        prefix      TEXT NOT NULL,
        digest      BLOB NOT NULL UNIQUE,
        tag         INTEGER NOT NULL,
        slot        INTEGER,
        requests    INTEGER CHECK (requests IS NULL OR requests > 0),
        interval    REAL CHECK (interval IS NULL OR interval > 0),
        metadata    TEXT NOT NULL DEFAULT '{}',
        scope       TEXT NOT NULL DEFAULT 'inference' CHECK (scope IN ('inference', 'manage')),
        owner       TEXT,
        state       TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleted')),
        created_at  REAL NOT NULL,
        expires_at  REAL,
        rotated_to  TEXT,
        deleted_at  REAL
    );
    CREATE UNIQUE INDEX keys_slot ON keys (slot) WHERE slot IS NOT NULL;
    CREATE INDEX keys_state ON keys (state);
    CREATE TABLE key_usage (
        key_id           TEXT PRIMARY KEY REFERENCES keys (id),
        requests         INTEGER NOT NULL DEFAULT 0,
        successes        INTEGER NOT NULL DEFAULT 0,
        failures_4xx     INTEGER NOT NULL DEFAULT 0,
        failures_5xx     INTEGER NOT NULL DEFAULT 0,
        input_tokens     INTEGER NOT NULL DEFAULT 0,
        output_tokens    INTEGER NOT NULL DEFAULT 0,
        latency_ms_total REAL NOT NULL DEFAULT 0,
        last_used_at     REAL,
        last_client_ip   TEXT
    );
    """,
        postgres="""
    CREATE TABLE keys (
        id          TEXT PRIMARY KEY,
        name        TEXT,
        prefix      TEXT NOT NULL,
        digest      BYTEA NOT NULL UNIQUE,
        tag         BIGINT NOT NULL,
        slot        BIGINT,
        requests    BIGINT CHECK (requests IS NULL OR requests > 0),
        interval    DOUBLE PRECISION CHECK (interval IS NULL OR interval > 0),
        metadata    TEXT NOT NULL DEFAULT '{}',
        scope       TEXT NOT NULL DEFAULT 'inference' CHECK (scope IN ('inference', 'manage')),
        owner       TEXT,
        state       TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleted')),
        created_at  DOUBLE PRECISION NOT NULL,
        expires_at  DOUBLE PRECISION,
        rotated_to  TEXT,
        deleted_at  DOUBLE PRECISION
    );
    CREATE UNIQUE INDEX keys_slot ON keys (slot) WHERE slot IS NOT NULL;
    CREATE INDEX keys_state ON keys (state);
    CREATE TABLE key_usage (
        key_id           TEXT PRIMARY KEY REFERENCES keys (id),
        requests         BIGINT NOT NULL DEFAULT 0,
        successes        BIGINT NOT NULL DEFAULT 0,
        failures_4xx     BIGINT NOT NULL DEFAULT 0,
        failures_5xx     BIGINT NOT NULL DEFAULT 0,
        input_tokens     BIGINT NOT NULL DEFAULT 0,
        output_tokens    BIGINT NOT NULL DEFAULT 0,
        latency_ms_total DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_used_at     DOUBLE PRECISION,
        last_client_ip   TEXT
    );
    """,
    ),
    Migration(
        2,
        "the request log, hourly rollups, known client IPs, alerts and leases",
        sqlite="""
    CREATE TABLE request_log (
        id            INTEGER PRIMARY KEY,
        time          REAL NOT NULL,
        key_id        TEXT NOT NULL,
        model         TEXT,
        status        INTEGER NOT NULL,
        latency_ms    REAL NOT NULL,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        client_ip     TEXT,
        user_agent    TEXT
    );
    CREATE INDEX request_log_time ON request_log (time);
    CREATE INDEX request_log_key_time ON request_log (key_id, time);
    CREATE TABLE usage_hourly (
        key_id           TEXT NOT NULL,
        hour             INTEGER NOT NULL,
        requests         INTEGER NOT NULL DEFAULT 0,
        successes        INTEGER NOT NULL DEFAULT 0,
        failures_4xx     INTEGER NOT NULL DEFAULT 0,
        failures_5xx     INTEGER NOT NULL DEFAULT 0,
        input_tokens     INTEGER NOT NULL DEFAULT 0,
        output_tokens    INTEGER NOT NULL DEFAULT 0,
        latency_ms_total REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, hour)
    ) WITHOUT ROWID;
    CREATE INDEX usage_hourly_hour ON usage_hourly (hour);
    CREATE TABLE key_ips (
        key_id     TEXT NOT NULL,
        ip         TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen  REAL NOT NULL,
        requests   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, ip)
    ) WITHOUT ROWID;
    CREATE TABLE alerts (
        id              TEXT PRIMARY KEY,
        key_id          TEXT NOT NULL,
        kind            TEXT NOT NULL
                        CHECK (kind IN ('volume_spike', 'unusual_hour', 'failure_rate', 'new_ip')),
        subject         TEXT NOT NULL DEFAULT '',
        evidence        TEXT NOT NULL DEFAULT '{}',
        created_at      REAL NOT NULL,
        acknowledged_at REAL,
        notified_at     REAL,
        notify_attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alerts_created ON alerts (created_at);
    CREATE INDEX alerts_condition ON alerts (key_id, kind, subject, created_at);
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
        postgres="""
    CREATE TABLE request_log (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time          DOUBLE PRECISION NOT NULL,
        key_id        TEXT NOT NULL,
        model         TEXT,
        status        INTEGER NOT NULL,
        latency_ms    DOUBLE PRECISION NOT NULL,
        input_tokens  BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        client_ip     TEXT,
        user_agent    TEXT
    );
    CREATE INDEX request_log_time ON request_log (time);
    CREATE INDEX request_log_key_time ON request_log (key_id, time);
    CREATE TABLE usage_hourly (
        key_id           TEXT NOT NULL,
        hour             BIGINT NOT NULL,
        requests         BIGINT NOT NULL DEFAULT 0,
        successes        BIGINT NOT NULL DEFAULT 0,
        failures_4xx     BIGINT NOT NULL DEFAULT 0,
        failures_5xx     BIGINT NOT NULL DEFAULT 0,
        input_tokens     BIGINT NOT NULL DEFAULT 0,
        output_tokens    BIGINT NOT NULL DEFAULT 0,
        latency_ms_total DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, hour)
    );
    CREATE INDEX usage_hourly_hour ON usage_hourly (hour);
    CREATE TABLE key_ips (
        key_id     TEXT NOT NULL,
        ip         TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        last_seen  DOUBLE PRECISION NOT NULL,
        requests   BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, ip)
    );
    CREATE TABLE alerts (
        id              TEXT PRIMARY KEY,
        key_id          TEXT NOT NULL,
        kind            TEXT NOT NULL
                        CHECK (kind IN ('volume_spike', 'unusual_hour', 'failure_rate', 'new_ip')),
        subject         TEXT NOT NULL DEFAULT '',
        evidence        TEXT NOT NULL DEFAULT '{}',
        created_at      DOUBLE PRECISION NOT NULL,
        acknowledged_at DOUBLE PRECISION,
        notified_at     DOUBLE PRECISION,
        notify_attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alerts_created ON alerts (created_at);
    CREATE INDEX alerts_condition ON alerts (key_id, kind, subject, created_at);
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    """,
    ),
    Migration(
        3,
        "the caller's own x-request-id of each request (the gateway sends its own id upstream)",
        sqlite="""
    ALTER TABLE request_log ADD COLUMN caller_request_id TEXT;
    """,
        postgres="""
    ALTER TABLE request_log ADD COLUMN caller_request_id TEXT;
    """,
    ),
    Migration(
        4,
        "usage batch ids: a batch is committed once, a retried batch is skipped",
        sqlite="""
    CREATE TABLE usage_batches (
        id           TEXT PRIMARY KEY,
        committed_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX usage_batches_committed ON usage_batches (committed_at);
    """,
        postgres="""
    CREATE TABLE usage_batches (
        id           TEXT PRIMARY KEY,
        committed_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX usage_batches_committed ON usage_batches (committed_at);
    """,
    ),
    # SQLite cannot add a foreign key to a column: its keys table is rebuilt, with
    # foreign keys off for the migration (SqliteStore.migrate). An owner that names no
    # user (no edge ever set one) is cleared: the key becomes an instance key.
    Migration(
        5,
        "accounts: users, sessions, one-time tokens, recovery codes, identities, invitations, the audit log;"
        " keys.owner references users",
        sqlite="""
    CREATE TABLE users (
        id                  TEXT PRIMARY KEY,
        email               TEXT NOT NULL,
        email_key           TEXT NOT NULL UNIQUE,
        display_name        TEXT,
        password_hash       TEXT,
        email_verified_at   REAL,
        role                TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
        disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at          REAL NOT NULL,
        last_login_at       REAL,
        password_changed_at REAL,
        totp_secret         BLOB,
        totp_enabled_at     REAL,
        totp_last_step      INTEGER
    );
    CREATE TABLE sessions (
        id           TEXT PRIMARY KEY,
        digest       BLOB NOT NULL UNIQUE,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        method       TEXT NOT NULL,
        created_at   REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        expires_at   REAL NOT NULL,
        client_ip    TEXT,
        user_agent   TEXT,
        device       TEXT
    );
    CREATE INDEX sessions_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_expires ON sessions (expires_at);
    CREATE TABLE account_tokens (
        digest     BLOB PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('verify', 'reset', 'setup', 'second_factor')),
        user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
        email      TEXT,
        created_at REAL NOT NULL,
        expires_at REAL,
        detail     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX account_tokens_user ON account_tokens (user_id, kind);
    CREATE TABLE recovery_codes (
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        digest  BLOB NOT NULL,
        used_at REAL,
        PRIMARY KEY (user_id, digest)
    );
    CREATE TABLE identities (
        provider     TEXT NOT NULL CHECK (provider IN ('github', 'google')),
        subject      TEXT NOT NULL,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        email        TEXT,
        created_at   REAL NOT NULL,
        last_used_at REAL,
        PRIMARY KEY (provider, subject)
    );
    CREATE INDEX identities_user ON identities (user_id);
    CREATE TABLE invitations (
        id         TEXT PRIMARY KEY,
        digest     BLOB NOT NULL UNIQUE,
        email      TEXT,
        role       TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
        created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at    REAL,
        used_by    TEXT REFERENCES users (id) ON DELETE SET NULL
    );
    CREATE TABLE audit_events (
        id        INTEGER PRIMARY KEY,
        time      REAL NOT NULL,
        event     TEXT NOT NULL,
        actor     TEXT,
        user_id   TEXT,
        target    TEXT,
        method    TEXT,
        client_ip TEXT,
        detail    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_events_time ON audit_events (time);
    CREATE INDEX audit_events_user ON audit_events (user_id, time);
    CREATE INDEX audit_events_actor ON audit_events (actor, time);
    CREATE TABLE keys_new (
        id          TEXT PRIMARY KEY,
        name        TEXT,
        prefix      TEXT NOT NULL,
        digest      BLOB NOT NULL UNIQUE,
        tag         INTEGER NOT NULL,
        slot        INTEGER,
        requests    INTEGER CHECK (requests IS NULL OR requests > 0),
        interval    REAL CHECK (interval IS NULL OR interval > 0),
        metadata    TEXT NOT NULL DEFAULT '{}',
        scope       TEXT NOT NULL DEFAULT 'inference' CHECK (scope IN ('inference', 'manage')),
        owner       TEXT REFERENCES users (id) ON DELETE SET NULL,
        state       TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleted')),
        created_at  REAL NOT NULL,
        expires_at  REAL,
        rotated_to  TEXT,
        deleted_at  REAL
    );
    INSERT INTO keys_new (id, name, prefix, digest, tag, slot, requests, interval, metadata, scope, owner,
                          state, created_at, expires_at, rotated_to, deleted_at)
        SELECT id, name, prefix, digest, tag, slot, requests, interval, metadata, scope, NULL,
               state, created_at, expires_at, rotated_to, deleted_at
        FROM keys;
    DROP TABLE keys;
    ALTER TABLE keys_new RENAME TO keys;
    CREATE UNIQUE INDEX keys_slot ON keys (slot) WHERE slot IS NOT NULL;
    CREATE INDEX keys_state ON keys (state);
    CREATE INDEX keys_owner ON keys (owner) WHERE owner IS NOT NULL;
    """,
        postgres="""
    CREATE TABLE users (
        id                  TEXT PRIMARY KEY,
        email               TEXT NOT NULL,
        email_key           TEXT NOT NULL UNIQUE,
        display_name        TEXT,
        password_hash       TEXT,
        email_verified_at   DOUBLE PRECISION,
        role                TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
        disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at          DOUBLE PRECISION NOT NULL,
        last_login_at       DOUBLE PRECISION,
        password_changed_at DOUBLE PRECISION,
        totp_secret         BYTEA,
        totp_enabled_at     DOUBLE PRECISION,
        totp_last_step      BIGINT
    );
    CREATE TABLE sessions (
        id           TEXT PRIMARY KEY,
        digest       BYTEA NOT NULL UNIQUE,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        method       TEXT NOT NULL,
        created_at   DOUBLE PRECISION NOT NULL,
        last_seen_at DOUBLE PRECISION NOT NULL,
        expires_at   DOUBLE PRECISION NOT NULL,
        client_ip    TEXT,
        user_agent   TEXT,
        device       TEXT
    );
    CREATE INDEX sessions_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_expires ON sessions (expires_at);
    CREATE TABLE account_tokens (
        digest     BYTEA PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('verify', 'reset', 'setup', 'second_factor')),
        user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
        email      TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        detail     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX account_tokens_user ON account_tokens (user_id, kind);
    CREATE TABLE recovery_codes (
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        digest  BYTEA NOT NULL,
        used_at DOUBLE PRECISION,
        PRIMARY KEY (user_id, digest)
    );
    CREATE TABLE identities (
        provider     TEXT NOT NULL CHECK (provider IN ('github', 'google')),
        subject      TEXT NOT NULL,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        email        TEXT,
        created_at   DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION,
        PRIMARY KEY (provider, subject)
    );
    CREATE INDEX identities_user ON identities (user_id);
    CREATE TABLE invitations (
        id         TEXT PRIMARY KEY,
        digest     BYTEA NOT NULL UNIQUE,
        email      TEXT,
        role       TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
        created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        used_at    DOUBLE PRECISION,
        used_by    TEXT REFERENCES users (id) ON DELETE SET NULL
    );
    CREATE TABLE audit_events (
        id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time      DOUBLE PRECISION NOT NULL,
        event     TEXT NOT NULL,
        actor     TEXT,
        user_id   TEXT,
        target    TEXT,
        method    TEXT,
        client_ip TEXT,
        detail    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_events_time ON audit_events (time);
    CREATE INDEX audit_events_user ON audit_events (user_id, time);
    CREATE INDEX audit_events_actor ON audit_events (actor, time);
    UPDATE keys SET owner = NULL WHERE owner IS NOT NULL;
    ALTER TABLE keys ADD CONSTRAINT keys_owner_user FOREIGN KEY (owner) REFERENCES users (id) ON DELETE SET NULL;
    CREATE INDEX keys_owner ON keys (owner) WHERE owner IS NOT NULL;
    """,
    ),
)

LATEST = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1)), "migrations are numbered 1, 2, 3, …"


def statements(script: str) -> list[str]:
    """A migration's statements (none contains a semicolon inside a literal)."""
    return [s.strip() for s in script.split(";") if s.strip()]
