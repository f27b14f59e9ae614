"""Settings, read once from the environment.

Every setting has a safe development default except the secrets, which
`cajex up` generates into the data folder on first start. Production refuses
to start without them (see `Settings.check_production`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path

from cajex import ROOT


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    #: "development" or "production". The development mailbox exists only
    #: in development mode.
    env: str = "production"
    #: Signs Flask's cookie.
    secret_key: str = ""
    #: Hex; signs workspace contexts. The database holds the same secret in a
    #: table cajex_app cannot read.
    context_secret: str = ""
    #: Hex; signs PostgREST JWTs (PostgREST's jwt-secret).
    jwt_secret: str = ""
    #: Hex or path; the master key that wraps per-workspace data keys.
    master_key: str = ""
    public_url: str = "http://127.0.0.1:8000"
    data_dir: Path = ROOT / ".cajex"
    smtp_url: str = ""
    mail_from: str = "cajex <no-reply@cajex.local>"
    stripe_api_key: str = ""
    stripe_api_base: str = ""
    stripe_webhook_secrets: tuple[str, ...] = ()
    #: Plan code -> Stripe price id, from STRIPE_PRICE_<PLAN> (cajex.billing).
    stripe_prices: dict = dataclasses.field(default_factory=dict)
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    #: The DNS server for TXT lookups proving claimed SSO domains, as
    #: host:port; empty: the system's resolvers.
    dns_server: str = ""
    pool_min: int = 2
    pool_max: int = 10
    #: The logins of the sign-in pages (cajex_signin), the job worker
    #: (cajex_worker) and Stripe's webhook (cajex_webhook). Empty:
    #: DATABASE_URL as that role, which suits a local cluster; in production
    #: give each role its own password and URL.
    signin_database_url: str = ""
    worker_database_url: str = ""
    webhook_database_url: str = ""
    #: Let the AI gateway call provider URLs on loopback or private
    #: addresses (a self-hosted model; the test suite). Off: a workspace
    #: admin's base URL could otherwise reach internal services (SSRF).
    ai_allow_private_hosts: bool = False
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def signin_url(self) -> str:
        return self.signin_database_url or role_url(self.database_url, "cajex_signin")

    @property
    def worker_url(self) -> str:
        return self.worker_database_url or role_url(self.database_url, "cajex_worker")

    @property
    def webhook_url(self) -> str:
        return self.webhook_database_url or role_url(self.database_url, "cajex_webhook")

    @property
    def development(self) -> bool:
        return self.env == "development"

    def check_production(self) -> None:
        """Refuse to run production with a missing or weak secret."""
        if self.development:
            return
        missing = [
            name
            for name in ("secret_key", "context_secret", "jwt_secret", "master_key")
            if len(getattr(self, name)) < 32
        ]
        if missing:
            raise SystemExit(
                "cajex: production needs these secrets set (32+ characters): "
                + ", ".join("CAJEX_" + m.upper() for m in missing)
            )


def role_url(url: str, role: str) -> str:
    """`url` (a PostgreSQL URL or conninfo) logging in as `role` instead."""
    if not url:
        return url
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**{**conninfo_to_dict(url), "user": role})


def from_env(**overrides) -> Settings:
    """Build settings from CAJEX_* variables, DATABASE_URL and REDIS_URL."""
    env = os.environ
    values = dict(
        database_url=env.get("DATABASE_URL", ""),
        redis_url=env.get("REDIS_URL", ""),
        env=env.get("CAJEX_ENV", "production"),
        secret_key=env.get("CAJEX_SECRET_KEY", ""),
        context_secret=env.get("CAJEX_CONTEXT_SECRET", ""),
        jwt_secret=env.get("CAJEX_JWT_SECRET", ""),
        master_key=env.get("CAJEX_MASTER_KEY", ""),
        public_url=env.get("CAJEX_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
        data_dir=Path(env.get("CAJEX_DATA_DIR", str(ROOT / ".cajex"))),
        smtp_url=env.get("CAJEX_SMTP_URL", ""),
        mail_from=env.get("CAJEX_MAIL_FROM", "cajex <no-reply@cajex.local>"),
        stripe_api_key=env.get("STRIPE_API_KEY", ""),
        stripe_api_base=env.get("STRIPE_API_BASE", ""),
        stripe_webhook_secrets=tuple(
            s for s in env.get("STRIPE_WEBHOOK_SECRETS", "").split(",") if s
        ),
        stripe_prices={
            k[len("STRIPE_PRICE_") :].lower(): v
            for k, v in env.items()
            if k.startswith("STRIPE_PRICE_") and v
        },
        s3_endpoint_url=env.get("CAJEX_S3_ENDPOINT_URL", ""),
        s3_bucket=env.get("CAJEX_S3_BUCKET", ""),
        dns_server=env.get("CAJEX_DNS_SERVER", ""),
        signin_database_url=env.get("SIGNIN_DATABASE_URL", ""),
        webhook_database_url=env.get("WEBHOOK_DATABASE_URL", ""),
        worker_database_url=env.get("WORKER_DATABASE_URL", ""),
        ai_allow_private_hosts=env.get("CAJEX_AI_ALLOW_PRIVATE_HOSTS", "").lower()
        in ("1", "true", "yes", "on"),
    )
    values.update(overrides)
    return Settings(**values)


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """Development secrets kept in the data folder, made on first use."""
    path = data_dir / "secrets.env"
    data_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                found[key] = value
    wanted = (
        "CAJEX_SECRET_KEY",
        "CAJEX_CONTEXT_SECRET",
        "CAJEX_JWT_SECRET",
        "CAJEX_MASTER_KEY",
    )
    changed = False
    for key in wanted:
        if key not in found:
            found[key] = secrets.token_hex(32)
            changed = True
    if changed:
        path.write_text("".join(f"{k}={v}\n" for k, v in found.items()))
        path.chmod(0o600)
    return found
