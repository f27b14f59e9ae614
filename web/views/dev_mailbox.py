"""The development mailbox: with no SMTP configured, emails land here.

Registered only in development mode (`development_only`), so production
never serves it whatever its settings say.
"""

from __future__ import annotations

from cajex.web.middleware import signin_pool as pool
from flask import Blueprint, render_template

development_only = True
bp = Blueprint("dev_mailbox", __name__, url_prefix="/dev")


@bp.get("/mailbox")
def page():
    with pool().connection() as conn:
        messages = conn.execute("select * from cajex_private.dev_mailbox(50)").fetchall()
    return render_template("signin/dev_mailbox.html", messages=messages)
