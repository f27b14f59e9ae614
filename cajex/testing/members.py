"""Fixtures for the members tests: one database per test module for the
permission matrix, whose many cells only read.

A cell of the matrix is one check of one role against one permission; with
a fresh database per cell the matrix alone would take a minute. The cells do
not write (the HTTP cells send requests that pass the permission gate and
then fail validation), so they share one database, one staffed workspace and
one app per module.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from cajex.testing import services
from cajex.web.middleware import close_pools

_n = itertools.count(1)


@pytest.fixture(scope="module")
def module_db_urls(request) -> dict:
    """URLs of a database cloned from the migrated template, for one module."""
    proc = request.getfixturevalue("cajex_pg")
    dbname = f"{proc.dbname}_module_{next(_n)}"
    janitor = DatabaseJanitor(
        user=proc.user,
        host=proc.host,
        port=proc.port,
        dbname=dbname,
        template_dbname=proc.template_dbname,
        maintenance_dbname=proc.maintenance_dbname,
        password=proc.password,
    )
    with janitor:
        base = f"{proc.host}:{proc.port}/{dbname}"
        yield {"admin": f"postgresql://postgres@{base}", "app": f"postgresql://cajex_app@{base}"}


@pytest.fixture(scope="module")
def module_world(module_db_urls):
    from cajex.testing.factory import World

    w = World(module_db_urls["admin"], module_db_urls["app"], services.context_secret())
    yield w
    w.close()


@pytest.fixture(scope="module")
def module_app(module_db_urls, tmp_path_factory):
    from cajex import config
    from cajex.web import create_app

    settings = config.Settings(
        database_url=module_db_urls["app"],
        redis_url=services.redis_url(),
        env="production",
        secret_key="s" * 40,
        context_secret=services.context_secret(),
        jwt_secret="j" * 48,
        master_key="m" * 64,
        public_url="http://cajex.test",
        data_dir=tmp_path_factory.mktemp("members"),
        pool_min=1,
        pool_max=4,
    )
    app = create_app(settings, {"TESTING": True})
    yield app
    close_pools(app)


@dataclasses.dataclass
class Staffed:
    """A workspace with one person in each role, and a second workspace
    whose owner is nobody's colleague."""

    workspace: object
    people: dict
    other: object


@pytest.fixture(scope="module")
def matrix_staff(module_world) -> Staffed:
    ws = module_world.workspace(plan="enterprise")
    people = {"owner": ws.owner}
    for role in ("admin", "member", "viewer"):
        people[role] = module_world.member(ws, role=role)
    other = module_world.workspace(plan="enterprise")
    return Staffed(ws, people, other)
