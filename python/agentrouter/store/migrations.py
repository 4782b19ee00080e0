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
