"""PostgREST's transaction for one request, replayed on a plain connection.

Per request PostgREST (v12) opens a transaction whose access mode follows the
HTTP method (GET and HEAD: READ ONLY; the others: READ WRITE), sets its
transaction-local settings in one statement (search path, the role of the
verified JWT, its claims, the method and the path), runs the pre-request
function, then the request's query. `request()` does the same as
cajex_authenticator, so a test sees exactly what PostgREST would, read-only
refusals included.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row

READ_ONLY_METHODS = ("GET", "HEAD")


@contextlib.contextmanager
def request(
    authenticator_url: str,
    role: str,
    claims: dict | str | None,
    method: str = "GET",
    path: str = "/",
) -> Iterator[psycopg.Connection]:
    """The connection inside one request's transaction, after its pre-request.

    `claims` are the verified JWT's (a dict, or text as PostgREST would pass
    it, malformed if a test wants); None for a request without a JWT, whose
    claims name only its role. Commits when the body returns, rolls back on
    error.
    """
    if claims is None:
        text = json.dumps({"role": role})
    elif isinstance(claims, str):
        text = claims
    else:
        text = json.dumps(claims)
    mode = "read only" if method.upper() in READ_ONLY_METHODS else "read write"
    with psycopg.connect(
        authenticator_url, row_factory=dict_row, autocommit=True
    ) as conn:
        conn.execute(f"begin isolation level read committed {mode}")
        try:
            conn.execute(
                "select set_config('search_path', '\"api\", \"public\"', true),"
                " set_config('role', %s, true),"
                " set_config('request.jwt.claims', %s, true),"
                " set_config('request.method', %s, true),"
                " set_config('request.path', %s, true)",
                (role, text, method.upper(), path),
            )
            conn.execute("select api.pre_request()")
            yield conn
        except BaseException:
            if not conn.closed:
                conn.execute("rollback")
            raise
        conn.execute("commit")
