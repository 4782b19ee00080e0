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
)
