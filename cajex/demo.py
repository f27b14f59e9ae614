"""Demo data: an enterprise with two business units and a consultancy with
three clients, people in several workspaces, a few dozen projects each.

Loaded through the same SQL functions and verified contexts as the web app,
so the demo is also a smoke test of them. Idempotent: running it again finds
what exists and adds only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import secrets

import psycopg
from psycopg.rows import dict_row

from cajex import config, context, db

ORGANISATIONS = [
    {
        "name": "Northwind Group",
        "owner": "olivia.owner@northwind.example",
        "workspaces": [
            ("northwind-retail", "Northwind Retail", "team"),
            ("northwind-logistics", "Northwind Logistics", "enterprise"),
        ],
    },
    {
        "name": "Keystone Architecture Partners",
        "owner": "kai.keystone@keystone.example",
        "workspaces": [
            ("client-acme", "Acme Insurance (client)", "enterprise"),
            ("client-globex", "Globex Energy (client)", "pro"),
            ("client-initech", "Initech Health (client)", "basic"),
        ],
    },
]

#: (email, display name, [(workspace slug, role)])
PEOPLE = [
    ("olivia.owner@northwind.example", "Olivia Owner", []),
    ("kai.keystone@keystone.example", "Kai Keystone", []),
    (
        "ada.architect@northwind.example",
        "Ada Architect",
        [("northwind-retail", "admin"), ("northwind-logistics", "member")],
    ),
    (
        "vik.viewer@northwind.example",
        "Vik Viewer",
        [("northwind-retail", "viewer"), ("northwind-logistics", "viewer")],
    ),
    (
        "sam.consultant@keystone.example",
        "Sam Consultant",
        [
            ("client-acme", "admin"),
            ("client-globex", "member"),
            ("client-initech", "member"),
        ],
    ),
    (
        "rita.reviewer@keystone.example",
        "Rita Reviewer",
        [("client-acme", "viewer"), ("client-globex", "admin")],
    ),
    ("carl.client@acme.example", "Carl Client", [("client-acme", "member")]),
]

PROJECT_THEMES = [
    ("Cloud landing zone", "platform"),
    ("Identity consolidation", "security"),
    ("Event streaming backbone", "platform"),
    ("Vendor evaluation: observability", "vendor"),
    ("Threat model: payments", "security"),
    ("Data residency strategy", "strategy"),
    ("API gateway selection", "vendor"),
    ("Legacy ERP retirement", "strategy"),
    ("Zero-trust network", "security"),
    ("Disaster recovery tiers", "platform"),
]
PROJECTS_PER_WORKSPACE = 30


def _session(conn, user_id) -> str:
    """A short demo session so the loader acts through verified contexts."""
    return conn.execute(
        "select cajex_private.create_session(%s, %s, 'demo', interval '10 minutes', interval '10 minutes') as id",
        (user_id, hashlib.sha256(secrets.token_bytes(32)).digest()),
    ).fetchone()["id"]


def load(database_url: str, context_secret: str) -> dict:
    """Create what is missing; return what exists as a JSON-able summary.

    Connects as the sign-in pages do (cajex_signin: SIGNIN_DATABASE_URL, or
    `database_url` as that role), since it makes users and their sessions.
    """
    url = os.environ.get("SIGNIN_DATABASE_URL") or config.role_url(
        database_url, "cajex_signin"
    )
    with psycopg.connect(url, row_factory=dict_row) as conn:
        users, sessions = {}, {}
        for email, name, _ in PEOPLE:
            users[email] = conn.execute(
                "select cajex_private.ensure_user(%s, %s) as id", (email, name)
            ).fetchone()["id"]
            sessions[email] = _session(conn, users[email])
        conn.commit()

        def token(email):
            return context.user_token(
                context_secret, users[email], sessions[email], ttl=600
            )

        workspaces = {}
        for org in ORGANISATIONS:
            owner = org["owner"]
            with db.in_context(conn, token(owner)):
                existing = conn.execute(
                    "select organisation_id from cajex.my_organisations() where name = %s",
                    (org["name"],),
                ).fetchone()
                org_id = (
                    existing["organisation_id"]
                    if existing
                    else conn.execute(
                        "select cajex.create_organisation(%s) as id", (org["name"],)
                    ).fetchone()["id"]
                )
                mine = {
                    w["slug"]: w
                    for w in conn.execute(
                        "select * from cajex.my_workspaces()"
                    ).fetchall()
                }
                for slug, name, plan in org["workspaces"]:
                    if slug in mine:
                        ws_id = mine[slug]["workspace_id"]
                    else:
                        ws_id = conn.execute(
                            "select cajex.create_workspace(%s, %s, %s, %s) as id",
                            (org_id, slug, name, plan),
                        ).fetchone()["id"]
                    workspaces[slug] = {
                        "id": str(ws_id),
                        "slug": slug,
                        "name": name,
                        "plan": plan,
                        "organisation": org["name"],
                        "owner": owner,
                    }

        for email, _, memberships in PEOPLE:
            for slug, role in memberships:
                owner = workspaces[slug]["owner"]
                with db.in_context(conn, token(owner), slug):
                    current = conn.execute(
                        "select role from cajex.memberships where user_id = %s",
                        (users[email],),
                    ).fetchone()
                    if current is None or current["role"] != role:
                        conn.execute(
                            "select cajex_private.add_member(%s, %s)",
                            (users[email], role),
                        )

        for slug, ws in workspaces.items():
            with db.in_context(conn, token(ws["owner"]), slug):
                have = conn.execute(
                    "select count(*) as n from cajex.projects"
                ).fetchone()["n"]
                for i in range(have, PROJECTS_PER_WORKSPACE):
                    theme, tag = PROJECT_THEMES[i % len(PROJECT_THEMES)]
                    conn.execute(
                        "select cajex.create_project(%s, %s, %s, %s)",
                        (
                            f"{theme} #{i + 1}",
                            f"Demo work item for {ws['name']}.",
                            [tag],
                            "active" if i % 4 else "draft",
                        ),
                    )
                ws["projects"] = conn.execute(
                    "select count(*) as n from cajex.projects"
                ).fetchone()["n"]

        for email in users:
            conn.execute(
                "select cajex_private.revoke_sessions(%s, 'demo_done', %s)",
                (users[email], sessions[email]),
            )
        conn.commit()

    owners = {ws["owner"]: [] for ws in workspaces.values()}
    for slug, ws in workspaces.items():
        owners[ws["owner"]].append((slug, "owner"))
    summary_users = []
    for email, name, memberships in PEOPLE:
        rows = owners.get(email, []) + memberships
        summary_users.append(
            {
                "email": email,
                "name": name,
                "id": str(users[email]),
                "memberships": [{"workspace": s, "role": r} for s, r in rows],
            }
        )
    return {"workspaces": list(workspaces.values()), "users": summary_users}
