"""Versioned schema migrations, applied in order; ``PRAGMA user_version`` holds the version.

Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: keys and their usage totals
    """
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
    # 2: the request log, hourly rollups, known client IPs, alerts and leases
    #    (management API, usage statistics and unusual-usage monitoring)
    """
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
    # 3: the caller's own x-request-id of each request (the gateway sends its own id
    #    upstream; this one lets a caller find its request in the log)
    """
    ALTER TABLE request_log ADD COLUMN caller_request_id TEXT;
    """,
)

MIGRATIONS += (
    # 4: reserved for the usage batch ids of the PostgreSQL branch (the lead's
    #    numbering); empty here until that branch's migration takes its place.
    "",
    # 5: accounts — users, their sessions, one-time tokens (email verification,
    #    password reset, the first admin's setup link, a pending second factor),
    #    TOTP recovery codes, OAuth identities, invitations, the audit log; and
    #    keys.owner becomes a reference to users (SQLite cannot add a foreign key to a
    #    column: the keys table is rebuilt, with foreign keys off for the migration,
    #    see Store._migrate). An owner that names no user (no edge ever set one) is
    #    cleared: the key becomes an instance key.
    """
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
)
