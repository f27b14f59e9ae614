"""The product's AI feature: a draft written from a project's own fields, a
project summary or a decision record, through the one gateway.

Contract: `draft(gateway, scope, kind, project)` returns the
gateway's `AIResult` (text and token cost) or raises its `AppError`. Nothing
is stored: the person reads the draft and copies what they keep. The prompt
holds only the project's name, status, tags and description, so a draft can
never draw on anything the asking member could not read themselves.
"""

from __future__ import annotations

from cajex.ai.gateway import AIResult, Gateway

#: draft kind (what the page offers) -> the gateway task it is budgeted and recorded as
KINDS = {
    "summary": "project_summary",
    "decision_record": "decision_record",
}

TASKS = tuple(KINDS.values())

LABELS = {
    "summary": "Project summary",
    "decision_record": "Decision record",
}

_SYSTEM = {
    "summary": (
        "You help an architecture team. Write a short project summary (at most 150 words) for "
        "stakeholders: purpose, current status, main themes. Use only the facts given; say "
        "plainly when something is not stated. Plain text, no headings."
    ),
    "decision_record": (
        "You help an architecture team. Draft an architecture decision record from the project "
        "facts given, with the sections Context, Decision, Status, Consequences. Use only the "
        "facts given; write 'to be decided' where they do not say. Plain text."
    ),
}

#: The description is cut to this many characters before it is sent, which
#: bounds the reservation of a draft whatever the project holds.
MAX_DESCRIPTION = 8000


def prompt_for(kind: str, project: dict) -> tuple[str, str]:
    """(system, prompt) of a draft of `kind` from the project's fields."""
    if kind not in KINDS:
        raise ValueError(kind)
    tags = ", ".join(project.get("tags") or []) or "none"
    description = (project.get("description") or "").strip()[
        :MAX_DESCRIPTION
    ] or "(none)"
    prompt = (
        f"Project name: {project['name']}\n"
        f"Status: {project.get('status') or 'unknown'}\n"
        f"Tags: {tags}\n"
        f"Description:\n{description}\n"
    )
    return _SYSTEM[kind], prompt


def draft(gateway: Gateway, scope, kind: str, project: dict) -> AIResult:
    """Draft `kind` for `project` through `gateway` in `scope` (cajex.db.Scope)."""
    system, prompt = prompt_for(kind, project)
    return gateway.complete(scope, KINDS[kind], prompt, system=system)
