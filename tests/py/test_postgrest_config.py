"""The configuration `cajex postgrest-config` writes, and the login it names."""

from __future__ import annotations

import psycopg

from cajex import jwt
from cajex.config import Settings
from cajex.postgrest import authenticator_url_from, render_config


def test_the_authenticator_login_is_derived_from_any_form_of_the_app_url():
    """Whatever form DATABASE_URL takes, PostgREST logs in as the
    authenticator and never with the app's password."""
    for url in (
        "postgresql://cajex_app:secret@db.internal:5433/cajex",
        "postgresql://db.internal:5433/cajex?user=cajex_app&password=secret",
        "host=db.internal port=5433 dbname=cajex user=cajex_app password=secret",
    ):
        derived = psycopg.conninfo.conninfo_to_dict(authenticator_url_from(url))
        assert derived == {
            "host": "db.internal",
            "port": "5433",
            "dbname": "cajex",
            "user": "cajex_authenticator",
        }, url


def test_the_derived_login_connects_as_the_authenticator(db_urls):
    with psycopg.connect(authenticator_url_from(db_urls["app"])) as conn:
        row = conn.execute("select session_user::text, current_user::text").fetchone()
    assert row == ("cajex_authenticator", "cajex_authenticator")


def test_the_config_exposes_only_the_api_schema_and_pins_the_audience(tmp_path):
    settings = Settings(
        database_url="postgresql://cajex_app@127.0.0.1/cajex",
        redis_url="",
        env="production",
        secret_key="s" * 40,
        context_secret="c" * 64,
        jwt_secret="p" * 48,
        master_key="m" * 64,
        public_url="http://cajex.test",
        data_dir=tmp_path,
    )
    text = render_config(settings, authenticator_url_from(settings.database_url))
    lines = dict(
        line.split(" = ", 1)
        for line in text.splitlines()
        if line and not line.startswith("#")
    )
    assert lines["db-schemas"] == '"api"'
    assert lines["db-anon-role"] == '"cajex_anon"'
    assert lines["db-pre-request"] == '"api.pre_request"'
    assert lines["jwt-aud"] == f'"{jwt.AUDIENCE}"'
    assert "cajex_authenticator" in lines["db-uri"]
