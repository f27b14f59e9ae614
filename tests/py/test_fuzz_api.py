"""Bad input at scale: random requests to every JSON endpoint find no 500s
and no answer that holds another workspace's data."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=15,
)
FIELDS = st.sampled_from(
    ["name", "description", "tags", "status", "colour", "", "id", "workspace_id"]
)
BODIES = (
    JSON
    | st.dictionaries(FIELDS, JSON, max_size=5)
    | st.fixed_dictionaries(
        {"name": st.text(max_size=400)},
        optional={"tags": st.lists(st.text(max_size=60))},
    )
)
SEGMENTS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"),
    max_size=60,
)
METHODS = st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE"])


def _api_rules(app):
    rules = []
    for rule in app.url_map.iter_rules():
        if "/api/" in rule.rule and rule.rule.startswith(("/w/", "/api/")):
            rules.append(rule)
    return sorted(rules, key=lambda r: r.rule)


@pytest.fixture
def scene(world, app, signed_in):
    mine = world.workspace()
    theirs = world.workspace()
    secret = world.project(theirs, name="THEIR-CANARY-7f3a")
    world.project(mine, name="my project")
    return {
        "client": signed_in(mine.owner),
        "mine": mine,
        "theirs": theirs,
        "secret": secret,
        "rules": _api_rules(app),
    }


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    method=METHODS,
    body=BODIES,
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=3),
)
def test_random_requests_never_500_and_never_leak(scene, data, method, body, query):
    """Any method, body, query and path parameter: a 4xx or a clean answer."""
    rule = data.draw(st.sampled_from(scene["rules"]))
    values = {}
    for arg in rule.arguments:
        if arg == "slug":
            values[arg] = data.draw(
                st.sampled_from([scene["mine"].slug, scene["theirs"].slug, "nope"])
                | SEGMENTS
            )
        else:
            values[arg] = data.draw(
                st.sampled_from([str(scene["secret"]["id"])]) | SEGMENTS
            )
    path = rule.rule
    for arg, value in values.items():
        # The segment goes in as it is: a replacement string would read its
        # backslashes as escapes.
        segment = value.replace("%", "%25") or "x"
        path = re.sub(rf"<(?:[a-z]+:)?{arg}>", lambda _m, s=segment: s, path)
    response = scene["client"].open(
        path,
        method=method,
        data=json.dumps(body),
        content_type="application/json",
        query_string=query,
    )
    assert response.status_code < 500, (
        method,
        path,
        response.status_code,
        response.get_data(as_text=True)[:300],
    )
    assert b"THEIR-CANARY-7f3a" not in response.get_data()
