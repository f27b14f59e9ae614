"""AI settings of a workspace: read for the settings page, saved with the
API key sealed by cajex.crypto (only its last four characters stay in the
clear). `conn` is inside the workspace's verified context; saving needs the
permission ai.configure (checked in SQL by cajex.ai_update_settings)."""

from __future__ import annotations

from cajex import crypto
from cajex.ai.gateway import COLUMN, TABLE

PUBLIC_FIELDS = (
    "enabled",
    "provider",
    "model",
    "base_url",
    "budget_tokens",
    "budget_period",
    "task_budgets",
    "max_output_tokens",
    "timeout_seconds",
    "api_key_last4",
    "updated_at",
)


def read(conn) -> dict | None:
    """The settings without key material (None when AI was never configured)."""
    row = conn.execute("select * from cajex.ai_settings").fetchone()
    if row is None:
        return None
    out = {k: row[k] for k in PUBLIC_FIELDS}
    out["api_key_set"] = row["api_key"] is not None
    if out["updated_at"] is not None:
        out["updated_at"] = out["updated_at"].isoformat()
    return out


def save(conn, master, workspace_id, changes: dict, api_key: str | None = None) -> dict:
    """Apply `changes` (the fields of cajex.ai_update_settings) and, if given, a new key."""
    sealed = last4 = None
    if api_key:
        api_key = api_key.strip()
        sealed = crypto.encrypt(
            conn, master, workspace_id, TABLE, COLUMN, str(workspace_id), api_key
        )
        last4 = crypto.last_four(api_key)
    from psycopg.types.json import Jsonb

    conn.execute(
        "select cajex.ai_update_settings(%s, %s, %s)", (Jsonb(changes), sealed, last4)
    )
    return read(conn)


def status(conn) -> dict:
    """On/off, paused, and this period's budget and use, for any member (ai.use)."""
    return conn.execute("select cajex.ai_status() as s").fetchone()["s"]
