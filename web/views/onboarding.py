"""The onboarding wizard: a guided, resumable setup of a new workspace.

Steps, in order: the organisation and the workspace's name and address; the
plan; first-run defaults (the role invitations propose, the allowed sign-in
methods, AI on or off, starter project tags); the first invitations. The
defaults come before the invitations so that the role chosen there is the
one the invitation list proposes.

Progress is the signed-in user's row in cajex.onboarding_drafts (readable
only by that user, written by cajex.save_onboarding_draft): each step that
validates saves the next step's name, so leaving and coming back resumes
where the person stopped, in any browser. The workspace is created when the
first step is done (so its address is held from then on); every later step
runs in that workspace's verified context through the same SQL functions
the rest of the app uses. Finishing drops the draft and opens the
workspace's projects page.
"""

from __future__ import annotations

import contextlib
import re

import psycopg
from cajex.web import auth
from cajex.web.middleware import pool, settings, user_view
from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from psycopg.types.json import Jsonb

from cajex import crypto, db, log, members
from cajex.errors import AppError, from_database

bp = Blueprint("onboarding", __name__, url_prefix="/onboarding")
_logger = log.get("cajex.onboarding")

STEPS = ("organisation", "plan", "defaults", "team")
STEP_LABELS = {"organisation": "Organisation", "plan": "Plan", "defaults": "Defaults",
               "team": "Team"}
SIGN_IN_METHODS = (("magic_link", "Magic link"), ("google", "Google"), ("github", "GitHub"),
                   ("apple", "Apple"))
AI_PROVIDERS = (("anthropic", "Anthropic"), ("openai", "OpenAI"))
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$")


class StepInvalid(Exception):
    """A step's input did not validate: field -> message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("invalid step")
        self.errors = errors


# -- the draft -------------------------------------------------------------------


def _draft() -> dict:
    """The caller's draft: {'step', 'data', 'workspace'} with the workspace's
    slug and name when it exists and the caller still owns it."""
    row = g.db.execute(
        "select step, data, workspace_id from cajex.onboarding_drafts"
    ).fetchone()
    if row is None:
        return {"step": "organisation", "data": {}, "workspace": None}
    workspace = None
    if row["workspace_id"] is not None:
        workspace = g.db.execute(
            "select slug, name, plan from cajex.my_workspaces()"
            " where workspace_id = %s and role = 'owner'",
            (row["workspace_id"],),
        ).fetchone()
        if workspace is None:
            # The workspace was deleted or handed over: start again.
            g.db.execute("select cajex.discard_onboarding_draft()")
            return {"step": "organisation", "data": {}, "workspace": None}
    step = row["step"] if row["step"] in STEPS else "organisation"
    return {"step": step, "data": row["data"], "workspace": workspace}


def _save(step: str, data: dict, workspace_id=None) -> None:
    g.db.execute("select cajex.save_onboarding_draft(%s, %s, %s)",
                 (step, Jsonb(data), workspace_id))


def _reachable(draft: dict, step: str) -> bool:
    return STEPS.index(step) <= STEPS.index(draft["step"])


@contextlib.contextmanager
def _in_workspace(slug: str):
    """A transaction in the new workspace's verified context (committed on
    success), alongside the view's own user-context transaction."""
    token = auth.user_token()
    with pool().connection() as conn, db.in_context(conn, token, slug) as opened:
        if opened.workspace_id is None:
            raise StepInvalid({"workspace": "this workspace is no longer yours to set up"})
        yield conn, opened


def _attempt(conn, call, fields: dict[str, str]):
    """Run `call(conn)` in a savepoint; a business-rule error becomes a field
    message (its SQLSTATE detail names the field) instead of a dead
    transaction."""
    try:
        with conn.transaction():
            return call(conn)
    except psycopg.Error as exc:
        known = from_database(exc)
        if known is None or known.status >= 500:
            raise
        field = fields.get(known.field or "", known.field or "form")
        raise StepInvalid({field: known.message}) from None


def _page(step: str, draft: dict, status: int = 200, errors: dict | None = None, **extra):
    return render_template(
        f"onboarding/{step}.html",
        step=step,
        steps=STEPS,
        labels=STEP_LABELS,
        draft=draft,
        data=draft["data"],
        workspace=draft["workspace"],
        errors=errors or {},
        **extra,
    ), status


def _next(draft: dict, step: str):
    return redirect(url_for(f"onboarding.{step}"))


# -- the entry -------------------------------------------------------------------


@bp.get("/")
@user_view
def start():
    """Resume at the saved step (or begin)."""
    return _next(None, _draft()["step"])


@bp.post("/discard")
@user_view
def discard():
    """Forget the draft. A workspace it already created stays, fully usable."""
    g.db.execute("select cajex.discard_onboarding_draft()")
    flash("The setup was discarded.", "info")
    return redirect(url_for("home.index"))


# -- 1. organisation and workspace -------------------------------------------------


def _organisations():
    return g.db.execute(
        "select organisation_id, name from cajex.my_organisations() where role = 'owner'"
    ).fetchall()


@bp.get("/organisation")
@user_view
def organisation():
    draft = _draft()
    return _page("organisation", draft, organisations=_organisations())


def _organisation_form() -> dict:
    form = request.form
    return {
        "mode": "existing" if form.get("mode") == "existing" else "new",
        "organisation_id": (form.get("organisation_id") or "")[:36],
        "organisation_name": (form.get("organisation_name") or "").strip()[:200],
        "workspace_name": (form.get("workspace_name") or "").strip()[:200],
        "slug": (form.get("slug") or "").strip().lower()[:48],
    }


def _check_organisation(entered: dict, organisations) -> None:
    errors = {}
    if entered["mode"] == "new" and not entered["organisation_name"]:
        errors["organisation_name"] = "name the organisation"
    if entered["mode"] == "existing" and entered["organisation_id"] not in {
            str(o["organisation_id"]) for o in organisations}:
        errors["organisation_id"] = "choose one of your organisations"
    if not entered["workspace_name"]:
        errors["workspace_name"] = "name the workspace"
    if not _SLUG.match(entered["slug"]):
        errors["slug"] = "3 to 48 lowercase letters, digits or dashes, starting and ending with a letter or digit"
    if errors:
        raise StepInvalid(errors)


@bp.post("/organisation")
@user_view
def save_organisation():
    draft = _draft()
    if draft["workspace"] is not None:
        # The workspace exists; its name and address change in its settings.
        return _next(draft, draft["step"])
    organisations = _organisations()
    entered = _organisation_form()
    # What was typed is kept even when it does not validate, so coming back
    # later shows it again.
    data = {**draft["data"], "organisation": entered}
    _save("organisation", data)
    draft["data"] = data
    try:
        _check_organisation(entered, organisations)

        def create(conn):
            org = entered["organisation_id"] if entered["mode"] == "existing" else conn.execute(
                "select cajex.create_organisation(%s) as id", (entered["organisation_name"],)
            ).fetchone()["id"]
            return conn.execute(
                "select cajex.create_workspace(%s, %s, %s, 'free') as id",
                (org, entered["slug"], entered["workspace_name"]),
            ).fetchone()["id"]

        workspace_id = _attempt(g.db, create, {"name": "workspace_name", "organisation": "organisation_id"})
    except StepInvalid as invalid:
        return _page("organisation", draft, 422, invalid.errors, organisations=organisations)
    _save("plan", data, workspace_id)
    _logger.info("onboarding.workspace_created", workspace_id=str(workspace_id))
    return _next(draft, "plan")


# -- 2. plan ---------------------------------------------------------------------


def _plans():
    return g.db.execute(
        "select code, name, max_seats, features, seat_price_cents, currency"
        " from cajex.plans order by rank"
    ).fetchall()


def _guard(step: str):
    """The draft, or a redirect when `step` cannot be shown yet."""
    draft = _draft()
    if draft["workspace"] is None or not _reachable(draft, step):
        return draft, _next(draft, draft["step"])
    return draft, None


@bp.get("/plan")
@user_view
def plan():
    draft, away = _guard("plan")
    return away or _page("plan", draft, plans=_plans())


def _change_plan(slug: str, code: str) -> dict | None:
    """Hand a paid plan to the billing module (web/views/billing.py), in the
    new workspace's context: {"done": True} when the plan changed (offline
    billing, or a card on file), {"checkout_url": ...} for Stripe Checkout,
    None when this build has no billing module."""
    try:
        from cajex.web.views import billing as billing_view

        change = billing_view.change_plan
    except (ImportError, AttributeError):
        return None
    saved = g.get("workspace")
    try:
        with _in_workspace(slug) as (conn, opened):
            if not opened.can("billing.manage"):
                raise StepInvalid({"plan": "only the owner chooses a paid plan"})
            # billing.change_plan reads the workspace from g, as its views do.
            g.workspace = opened
            # Checkout comes back to the wizard's next step, or to this one
            # when the customer turns back.
            base = settings().public_url.rstrip("/") + bp.url_prefix
            try:
                with conn.transaction():
                    return change(conn, code, success_url=f"{base}/defaults?checkout=done",
                                  cancel_url=f"{base}/plan")
            except AppError as err:
                raise StepInvalid({"plan": err.message}) from None
    finally:
        if saved is None:
            g.pop("workspace", None)
        else:
            g.workspace = saved


@bp.post("/plan")
@user_view
def save_plan():
    draft, away = _guard("plan")
    if away:
        return away
    plans = {p["code"]: p for p in _plans()}
    code = request.form.get("plan", "")
    if code not in plans or code == "enterprise":
        return _page("plan", draft, 422, {"plan": "choose one of the plans shown"}, plans=list(plans.values()))
    slug = draft["workspace"]["slug"]
    outcome = None
    if code != "free" and code != draft["workspace"]["plan"]:
        try:
            outcome = _change_plan(slug, code)
        except StepInvalid as invalid:
            return _page("plan", draft, 422, invalid.errors, plans=list(plans.values()))
    if code == "free" or code == draft["workspace"]["plan"] or (outcome or {}).get("done"):
        billing = "none"
    elif outcome and outcome.get("checkout_url"):
        billing = "checkout"
    else:
        billing = "billing_page"
    data = {**draft["data"], "plan": {"code": code, "billing": billing}}
    _save(max(draft["step"], "defaults", key=STEPS.index), data)
    _logger.info("onboarding.plan_chosen", plan=code, billing=billing)
    if billing == "checkout":
        # Stripe takes the card and billing changes the plan from its
        # webhook; Checkout sends the customer back to the defaults step.
        return redirect(outcome["checkout_url"], 303)
    if billing == "billing_page":
        flash(f"The {plans[code]['name']} plan is noted. The workspace starts on Free; "
              "billing continues on the billing page, where the plan changes once a card is added.",
              "info")
    return _next(draft, "defaults")


# -- 3. first-run defaults -------------------------------------------------------------


def _defaults_form() -> dict:
    form = request.form
    tags = [t.strip() for t in re.split(r"[,\n]", form.get("project_tags", "")) if t.strip()]
    return {
        "default_role": form.get("default_role", ""),
        "sign_in_methods": [m for m in form.getlist("sign_in_methods") if isinstance(m, str)][:10],
        "ai_enabled": form.get("ai_enabled") == "on",
        "ai_provider": form.get("ai_provider", "anthropic"),
        "project_tags": tags[:64],
    }


@bp.get("/defaults")
@user_view
def defaults():
    draft, away = _guard("defaults")
    if away:
        return away
    if request.args.get("checkout") == "done":
        from cajex.web.views.billing import CHECKOUT_DONE

        flash(CHECKOUT_DONE, "info")
    saved = draft["data"].get("defaults")
    if saved is None:
        with _in_workspace(draft["workspace"]["slug"]) as (conn, _):
            row = conn.execute("select * from cajex.workspace_defaults()").fetchone()
        saved = {"default_role": row["default_role"], "sign_in_methods": ["magic_link", "google", "github", "apple"],
                 "ai_enabled": row["ai_enabled"], "ai_provider": "anthropic",
                 "project_tags": row["project_tags"]}
    return _defaults_page(draft, saved)


def _defaults_page(draft, values, status=200, errors=None):
    with _in_workspace(draft["workspace"]["slug"]) as (conn, _):
        plan_has_ai = conn.execute("select cajex.workspace_has_feature('ai') as ok").fetchone()["ok"]
    return _page("defaults", draft, status, errors, values=values, methods=SIGN_IN_METHODS,
                 providers=AI_PROVIDERS, plan_has_ai=plan_has_ai)


@bp.post("/defaults")
@user_view
def save_defaults():
    draft, away = _guard("defaults")
    if away:
        return away
    values = _defaults_form()
    api_key = (request.form.get("ai_api_key") or "").strip()
    try:
        if values["ai_enabled"] and values["ai_provider"] not in dict(AI_PROVIDERS):
            raise StepInvalid({"ai_provider": "choose a provider"})
        if values["ai_enabled"] and not api_key:
            raise StepInvalid({"ai_api_key": "AI needs the provider's API key to start on; or leave AI off for now"})
        with _in_workspace(draft["workspace"]["slug"]) as (conn, opened):

            def apply(c):
                c.execute("select cajex.apply_onboarding_defaults(%s, %s, %s, %s)",
                          (values["default_role"], values["sign_in_methods"], values["ai_enabled"],
                           values["project_tags"]))
                from cajex.ai import settings as ai_settings

                if values["ai_enabled"]:
                    ai_settings.save(c, crypto.master_key_from_settings(settings()), opened.workspace_id,
                                     {"enabled": True, "provider": values["ai_provider"]}, api_key)
                else:
                    ai_settings.save(c, None, opened.workspace_id, {"enabled": False})

            _attempt(conn, apply, {"methods": "sign_in_methods", "api_key": "ai_api_key",
                                   "provider": "ai_provider"})
    except StepInvalid as invalid:
        return _defaults_page(draft, values, 422, invalid.errors)
    # The key itself is never kept in the draft.
    data = {**draft["data"], "defaults": values}
    _save(max(draft["step"], "team", key=STEPS.index), data)
    return _next(draft, "team")


# -- 4. the team -------------------------------------------------------------------


def _team_page(draft, status=200, errors=None, results=None):
    with _in_workspace(draft["workspace"]["slug"]) as (conn, _):
        seats = conn.execute(
            "select cajex.context_seat_count() as used, p.max_seats, p.name as plan"
            " from cajex.workspaces w join cajex.plans p on p.code = w.plan"
            " where w.id = (select cajex.current_workspace_id())"
        ).fetchone()
        pending = conn.execute(
            "select email, role from cajex.invitations where status = 'pending'"
            " order by created_at limit 200"
        ).fetchall()
    default_role = (draft["data"].get("defaults") or {}).get("default_role", "member")
    return _page("team", draft, status, errors, seats=seats, pending=pending, results=results,
                 default_role=default_role, max_rows=members.MAX_BULK_ROWS,
                 outcome_text=current_app.jinja_env.globals.get("invitation_outcome_text", {}))


@bp.get("/team")
@user_view
def team():
    draft, away = _guard("team")
    return away or _team_page(draft)


@bp.post("/team")
@user_view
def invite_team():
    """Invite a pasted list or CSV through the bulk-invite path of the members
    page (cajex.members): each row gets its own outcome."""
    draft, away = _guard("team")
    if away:
        return away
    default_role = (draft["data"].get("defaults") or {}).get("default_role", "member")
    try:
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            rows = members.parse_bulk(upload.read(members.MAX_BULK_ROWS * 400 + 1), default_role)
        else:
            rows = members.parse_bulk(request.form.get("list", ""), default_role)
    except members.BulkListError as err:
        return _team_page(draft, 422, {"list": err.message})
    slug = draft["workspace"]["slug"]
    results: list[dict] = []
    with _in_workspace(slug) as (conn, _):
        for start in range(0, len(rows), members.CHUNK_SIZE):
            results += members.invite_rows(conn, settings().public_url, slug,
                                           rows[start:start + members.CHUNK_SIZE])
    invited = sum(r["outcome"] == "invited" for r in results)
    team_data = draft["data"].get("team") or {}
    data = {**draft["data"], "team": {"invited": int(team_data.get("invited", 0)) + invited}}
    _save(draft["step"], data)
    draft["data"] = data
    _logger.info("onboarding.team_invited", rows=len(rows), invited=invited)
    return _team_page(draft, results=results)


@bp.post("/finish")
@user_view
def finish():
    draft, away = _guard("team")
    if away:
        return away
    slug = draft["workspace"]["slug"]
    g.db.execute("select cajex.discard_onboarding_draft()")
    _logger.info("onboarding.finished")
    billing = (draft["data"].get("plan") or {}).get("billing")
    if billing == "billing_page":
        flash("Your workspace is ready. Billing for the plan you chose continues on the billing page.",
              "info")
    else:
        flash("Your workspace is ready.", "info")
    return redirect(url_for("projects.page", slug=slug))
