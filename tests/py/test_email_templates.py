"""Every email the platform queues renders: a subject, a text and a branded
HTML body (cajex.mail.render refuses a template without its subject line,
and the job would then fail on every attempt)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cajex import mail

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates" / "email"
QUEUED = sorted(
    set(
        re.findall(
            r"'template', '([a-z_]+)'",
            "".join(
                p.read_text()
                for p in (TEMPLATES.parents[2] / "db" / "functions").glob("*.sql")
            ),
        )
    )
)

#: What the SQL functions put in each email's params.
PARAMS = {
    "export_ready": {
        "export_id": "0b6c5f6e-1f7e-4d6a-9a53-2f7c1d0e4b11",
        "expires_at": "2026-12-11T10:00:00+00:00",
        "rows": {"projects": 12, "members": 3},
        "url": "https://cajex.example/w/acme/exports",
    },
    "workspace_deleted": {
        "workspace_name": "Acme Strategy",
        "workspace_id": "0b6c5f6e-1f7e-4d6a-9a53-2f7c1d0e4b11",
        "purge_after": "2027-01-03T10:00:00+00:00",
    },
}


def test_every_queued_template_exists_with_a_subject_and_the_branded_layout():
    assert {"export_ready", "workspace_deleted", "invitation", "magic_link"} <= set(
        QUEUED
    )
    for name in QUEUED:
        text = (TEMPLATES / f"{name}.txt").read_text()
        html = (TEMPLATES / f"{name}.html").read_text()
        assert text.startswith("Subject: "), name
        assert html.startswith('{% extends "email/base.html" %}'), name


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_the_retention_emails_render(name):
    subject, text, html = mail.render(name, PARAMS[name])
    assert subject and "\n" not in subject
    if name == "workspace_deleted":
        assert "Acme Strategy" in subject and "2027-01-03" in text
    else:
        assert "projects 12" in text and "https://cajex.example/w/acme/exports" in html
    assert "<html" in html.lower()
