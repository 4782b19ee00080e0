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
)

LATEST = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1)), "migrations are numbered 1, 2, 3, …"


def statements(script: str) -> list[str]:
    """A migration's statements (none contains a semicolon inside a literal)."""
    return [s.strip() for s in script.split(";") if s.strip()]
