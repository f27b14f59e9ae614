"""pytest plugin (enabled in pyproject.toml): servers, databases, the app.

Each test gets its own database cloned from a template that holds the
migrated schema (pytest-postgresql's no-process fixture against the cluster
this session started), so tests are isolated and fast.
"""

from __future__ import annotations

import os

import pytest
from pytest_postgresql import factories

from cajex.testing import services
from cajex.testing.billing import (  # noqa: F401  (fixtures)
    billing_app,
    billing_settings,
    localstripe,
    stripe_counter,
)
from cajex.testing.workspaces import live_server, mail_worker  # noqa: F401  (fixtures)
from cajex.web.middleware import close_pools

TEMPLATE_DB = "cajex_tests"


def pytest_configure(config):
    if not os.environ.get("CAJEX_LOG_FILE"):
        import tempfile

        fd, path = tempfile.mkstemp(prefix="cajex-test-logs-", suffix=".jsonl")
        os.close(fd)
        os.environ["CAJEX_LOG_FILE"] = path
    host, port = services.postgres()
    config.option.postgresql_host = host
    config.option.postgresql_port = str(port)
    config.option.postgresql_user = "postgres"
    config.option.postgresql_dbname = TEMPLATE_DB


cajex_pg = factories.postgresql_noproc(load=[services.load_schema])
admin_conn = factories.postgresql("cajex_pg")


@pytest.fixture
def db_urls(admin_conn) -> dict:
    """URLs of this test's database: as the superuser, cajex_app and the
    other login roles."""
    info = admin_conn.info
    base = f"127.0.0.1:{info.port}/{info.dbname}"
    return {
        "admin": f"postgresql://postgres@{base}",
        "app": f"postgresql://cajex_app@{base}",
        "worker": f"postgresql://cajex_worker@{base}",
        "authenticator": f"postgresql://cajex_authenticator@{base}",
        "dbname": info.dbname,
    }


@pytest.fixture
def world(db_urls):
    """Factories and connections over this test's database."""
    from cajex.testing.factory import World

    w = World(db_urls["admin"], db_urls["app"], services.context_secret())
    yield w
    w.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return services.redis_url()


@pytest.fixture
def settings(db_urls, redis_url, tmp_path):
    from cajex import config

    return config.Settings(
        database_url=db_urls["app"],
        redis_url=redis_url,
        env="production",
        secret_key="s" * 40,
        context_secret=services.context_secret(),
        jwt_secret="j" * 48,
        master_key="m" * 64,
        public_url="http://cajex.test",
        data_dir=tmp_path,
        pool_min=1,
        pool_max=4,
    )


@pytest.fixture
def app(settings):
    from cajex.web import create_app

    application = create_app(settings, {"TESTING": True})
    yield application
    close_pools(application)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def signed_in(world, app):
    """A function that returns a fresh test client signed in as a user."""

    def sign_in(user):
        c = app.test_client()
        world.login(c, user)
        return c

    return sign_in


@pytest.fixture
def csrf_headers() -> dict:
    """The header a signed-in test client's forms carry (see World.login)."""
    return {"X-CSRF-Token": "test-csrf-token"}


def pytest_collection_modifyitems(session, config, items):
    """Tests marked run_last go last (the log check reads the whole run's logs)."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


def pytest_report_header(config):
    return [f"cajex: PostgreSQL on 127.0.0.1:{os.environ.get('CAJEX_TEST_PG_PORT')}"]
