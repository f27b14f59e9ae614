"""The isolation audit behind `cajex db doctor`.

Each check is one catalog query that returns the offending objects by name.
A workspace-owned table is one with a NOT NULL `workspace_id` column. The
application roles are the ones requests run as.
"""

from __future__ import annotations

import dataclasses

APP_ROLES = (
    "cajex_app",
    "cajex_signin",
    "cajex_worker",
    "cajex_webhook",
    "cajex_api",
    "cajex_authenticator",
    "cajex_anon",
)
#: The views that must run with their owner's rights, because they read
#: what the request roles cannot (db/functions/000_context.sql): the context,
#: which checks its seal with the seal's key, and a browser's opening, which
#: checks the session credential it is given against sessions and
#: memberships and seals the result. Each answers only for the caller's own
#: transaction. And the open workspace's AI terms, which read its billing
#: row for the AI functions (only cajex_owner, their owner, may read it).
TRUSTED_VIEWS = (
    "cajex_private.context",
    "cajex_private.browser_opening",
    "cajex_private.context_ai_terms",
)
#: Platform tables that name a workspace but are keyed platform-wide on
#: purpose, each with the reason. Only the key check skips them: they still
#: need RLS forced, and no request role may read them.
PLATFORM_KEYED_TABLES = {
    # An email domain routes "Sign in with SSO" to exactly one connection on
    # the whole platform, so its key is the domain. Written only by a definer
    # trigger on cajex.sso_domains; a Citus reference table.
    "cajex_private.sso_domain_routes": "a domain routes to one connection platform-wide",
}
#: Functions that bypass RLS (owned by cajex_definer) and take an id from a
#: request role: each was reviewed to scope itself, and says how. A new one
#: is a finding until it is added here, with its reason.
REVIEWED_ID_TAKERS = {
    "cajex.create_workspace": "only in an organisation the caller owns",
    "cajex.end_my_session": "only the caller's own sessions",
    "cajex.organisation_workspaces": "only for an owner of that organisation",
    "cajex.public_branding_by_id": "an active workspace's public branding (name, colours, logo)",
    "cajex.remove_identity": "only the caller's own identities",
    "cajex.restore_workspace": "only a deleted workspace the caller owns",
    "cajex.save_onboarding_draft": "the caller's own draft, naming a workspace the caller owns",
    "cajex.sso_connection_route": "where a connection's sign-in starts, for the sign-in page",
    "cajex_private.destroy_workspace_keys": "only a deleted workspace past its purge date",
    "cajex_private.export_download_allowed": "needs the export's object key",
    "cajex_private.request_magic_link": "the workspace only brands the email",
    "cajex_private.signin_methods_required": "needs the session's secret",
    "cajex_private.sso_provision": "needs the job context of the connection's own workspace",
    "cajex_private.sso_logout": "needs the job context of the connection's own workspace",
}
#: The request roles whose rights the id check looks at.
REQUEST_ROLES = ("cajex_app", "cajex_api", "cajex_anon")
#: What a workspace-scoped policy must read: the verified context.
CONTEXT_PATTERN = r"cajex_private\.context\y|cajex\.current_workspace_id\(\)"
#: Schemas the audit ignores: PostgreSQL's own and the extensions'.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "extensions")


@dataclasses.dataclass(frozen=True, order=True)
class Finding:
    check: str
    obj: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.obj}: {self.message}"


_USER_SCHEMAS = """
  n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'extensions')
  and n.nspname not like 'pg_temp_%%' and n.nspname not like 'pg_toast_temp_%%'
"""

_WORKSPACE_OWNED = f"""
  select c.oid, format('%%I.%%I', n.nspname, c.relname) as name, a.attnum
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  join pg_attribute a on a.attrelid = c.oid and a.attname = 'workspace_id' and not a.attisdropped
  where c.relkind in ('r', 'p') and a.attnotnull and {_USER_SCHEMAS}
"""

CHECKS: dict[str, tuple[str, str]] = {
    "rls_missing": (
        "row-level security is not enabled and forced",
        f"""
        select format('%%I.%%I', n.nspname, c.relname)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p') and {_USER_SCHEMAS}
          and not (c.relrowsecurity and c.relforcerowsecurity)
        """,
    ),
    "key_without_workspace": (
        "a primary key or unique constraint does not lead with workspace_id",
        f"""
        with owned as ({_WORKSPACE_OWNED})
        select o.name || ' (' || ic.relname || ')'
        from owned o
        join pg_index i on i.indrelid = o.oid and (i.indisunique or i.indisprimary)
        join pg_class ic on ic.oid = i.indexrelid
        where i.indkey[0] <> o.attnum
          and o.name <> all (%(platform_keyed)s)
        """,
    ),
    "foreign_key_without_workspace": (
        "a foreign key between workspace-owned tables does not include workspace_id",
        f"""
        with owned as ({_WORKSPACE_OWNED})
        select src.name || ' (' || con.conname || ')'
        from pg_constraint con
        join owned src on src.oid = con.conrelid
        join owned dst on dst.oid = con.confrelid
        where con.contype = 'f' and not (src.attnum = any (con.conkey))
        """,
    ),
    "definer_without_search_path": (
        "a security definer function does not fix its search_path",
        f"""
        select format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where p.prosecdef and {_USER_SCHEMAS}
          and not exists (select from unnest(coalesce(p.proconfig, '{{}}')) cfg where cfg like 'search_path=%%')
        """,
    ),
    "definer_executable_by_public": (
        "a security definer function is executable by PUBLIC",
        f"""
        select format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where p.prosecdef and {_USER_SCHEMAS}
          and (p.proacl is null
               or exists (select from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE'))
        """,
    ),
    "bypassing_function_takes_an_id": (
        "a function that bypasses RLS takes an id from a request role: check that it"
        " scopes itself, then list it in cajex.doctor.REVIEWED_ID_TAKERS with how",
        f"""
        select format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
        from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        join pg_roles o on o.oid = p.proowner
        where (o.rolbypassrls or o.rolsuper) and {_USER_SCHEMAS}
          and 'uuid'::regtype = any (p.proargtypes::regtype[])
          and exists (select from unnest(%(request_roles)s::text[]) r
                      where has_function_privilege(r, p.oid, 'execute'))
          and format('%%I.%%I', n.nspname, p.proname) <> all (%(reviewed_id_takers)s)
        """,
    ),
    "view_without_security_invoker": (
        "a view runs with its owner's rights (security_invoker is not set)",
        f"""
        select format('%%I.%%I', n.nspname, c.relname)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'v' and {_USER_SCHEMAS}
          and format('%%I.%%I', n.nspname, c.relname) <> all (%(trusted_views)s)
          and not coalesce('security_invoker=true' = any (c.reloptions)
                           or 'security_invoker=on' = any (c.reloptions), false)
        """,
    ),
    "app_role_privileged": (
        "an application role is superuser, has BYPASSRLS, or inherits a role that does",
        """
        select r.rolname
        from pg_roles r
        where r.rolname = any (%(app_roles)s)
          and (r.rolsuper or r.rolbypassrls
               or exists (
                 select from pg_auth_members m join pg_roles g on g.oid = m.roleid
                 where m.member = r.oid and (g.rolsuper or g.rolbypassrls or g.rolname in ('cajex_owner', 'cajex_definer'))))
        """,
    ),
    "app_role_owns_objects": (
        "an application role owns database objects",
        f"""
        select r.rolname || ' owns ' || format('%%I.%%I', n.nspname, c.relname)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_roles r on r.oid = c.relowner
        where r.rolname = any (%(app_roles)s) and {_USER_SCHEMAS}
        union all
        select r.rolname || ' owns ' || format('%%I.%%I', n.nspname, p.proname)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_roles r on r.oid = p.proowner
        where r.rolname = any (%(app_roles)s) and {_USER_SCHEMAS}
        union all
        select r.rolname || ' owns schema ' || n.nspname
        from pg_namespace n join pg_roles r on r.oid = n.nspowner
        where r.rolname = any (%(app_roles)s)
        """,
    ),
    "policy_without_context": (
        "a policy on a workspace-owned table does not use the verified context",
        f"""
        with owned as ({_WORKSPACE_OWNED})
        select o.name || ' (' || pol.polname || ')'
        from owned o
        join pg_policy pol on pol.polrelid = o.oid
        -- A policy only for roles that bypass RLS is never consulted.
        where not (not 0::oid = any (pol.polroles) and not exists (
          select from pg_roles r where r.oid = any (pol.polroles) and not r.rolbypassrls))
        and (not (
          coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') ~ %(context_pattern)s
          or (pol.polqual is null
              and coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '') ~ %(context_pattern)s)
        )
        or (pol.polwithcheck is not null
            and coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '') !~ %(context_pattern)s))
        """,
    ),
}


def audit(conn) -> list[Finding]:
    """Run every check; the findings, sorted."""
    findings = []
    for check, (message, query) in CHECKS.items():
        for (obj,) in conn.execute(
            query,
            {
                "app_roles": list(APP_ROLES),
                "request_roles": list(REQUEST_ROLES),
                "reviewed_id_takers": list(REVIEWED_ID_TAKERS),
                "trusted_views": list(TRUSTED_VIEWS),
                "platform_keyed": list(PLATFORM_KEYED_TABLES),
                "context_pattern": CONTEXT_PATTERN,
            },
        ).fetchall():
            findings.append(Finding(check, obj, message))
    conn.rollback()
    return sorted(findings)
