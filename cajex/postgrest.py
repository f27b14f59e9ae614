"""PostgREST's configuration for the `api` schema."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cajex import jwt
from cajex.config import Settings


def authenticator_url_from(database_url: str) -> str:
    """The same server and database, as cajex_authenticator (a URL or a
    key=value string alike; a `user` in the query and the app's password
    are dropped: the authenticator has a password of its own)."""
    params = conninfo_to_dict(database_url)
    params.pop("password", None)
    params["user"] = "cajex_authenticator"
    params.setdefault("host", "127.0.0.1")
    return make_conninfo(**params)


def render_config(settings: Settings, authenticator_url: str, port: int = 3000) -> str:
    secret = settings.jwt_secret
    return "\n".join(
        [
            "# PostgREST for cajex: written by `cajex postgrest-config`.",
            "# PostgREST logs in as cajex_authenticator (NOINHERIT) and switches,",
            "# per request, to the role in the verified JWT: cajex_api, or",
            "# cajex_anon without a JWT (which sees nothing).",
            f'db-uri = "{authenticator_url}"',
            'db-schemas = "api"',
            'db-anon-role = "cajex_anon"',
            "# Runs in every request's transaction; the context itself is",
            "# checked from request.jwt.claims by the database, GET included.",
            'db-pre-request = "api.pre_request"',
            f'jwt-secret = "{secret}"',
            f'jwt-aud = "{jwt.AUDIENCE}"',
            'jwt-role-claim-key = ".role"',
            "db-pool = 10",
            'server-host = "127.0.0.1"',
            f"server-port = {port}",
            "",
        ]
    )


def write_config(
    output: str,
    settings: Settings,
    authenticator_url: str | None,
    database_url: str,
    port: int,
) -> Path:
    path = Path(output)
    path.write_text(
        render_config(
            settings, authenticator_url or authenticator_url_from(database_url), port
        )
    )
    path.chmod(0o600)
    return path
