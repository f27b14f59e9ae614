"""AI settings of a workspace: read for the settings page, saved with the
API key sealed by cajex.crypto (only its last four characters stay in the
clear). `conn` is inside the workspace's verified context; saving needs the
permission ai.configure (checked in SQL by cajex.ai_update_settings)."""

from __future__ import annotations

from cajex import crypto
from cajex.ai import netguard
from cajex.ai.gateway import COLUMN, TABLE
from cajex.errors import AppError

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


def check_base_url(value, allow_private_hosts: bool | None = None) -> None:
    """Refuse a base URL the gateway would refuse to call (422 invalid, field base_url).

    The SQL function checks the URL's form; the host (literal, or what it
    resolves to now) is checked here, as it depends on the deployment's
    CAJEX_AI_ALLOW_PRIVATE_HOSTS. A name that does not resolve yet is let
    through: the call checks it again.
    """
    if not isinstance(value, str) or not value.strip():
        return
    try:
        host, port = netguard.parse(value.strip())
    except netguard.Refused:
        return  # the form: cajex.ai_update_settings refuses it (CXINV)
    if allow_private_hosts is None:
        allow_private_hosts = netguard.default_allow_private()
    try:
        netguard.resolve(host, port, allow_private_hosts)
    except netguard.Refused as exc:
        if exc.reason == "host does not resolve":
            return
        raise AppError(
            422,
            "invalid",
            f"the base URL must name a public address ({exc.reason})",
            "base_url",
        ) from None


def save(
    conn,
    master,
    workspace_id,
    changes: dict,
    api_key: str | None = None,
    *,
    allow_private_hosts: bool | None = None,
) -> dict:
    """Apply `changes` (the fields of cajex.ai_update_settings) and, if given, a new key.

    `allow_private_hosts`: the deployment's CAJEX_AI_ALLOW_PRIVATE_HOSTS
    (None: read from the environment).
    """
    if isinstance(changes, dict) and "base_url" in changes:
        check_base_url(changes["base_url"], allow_private_hosts)
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
