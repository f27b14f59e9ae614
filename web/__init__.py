"""The web app: a thin Flask layer over the database.

A view resolves the workspace from the URL, opens the verified context in its
transaction and calls SQL; it never filters by workspace itself.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

from flask import Flask

from cajex import config as config_module
from cajex import db, log


def create_app(
    settings: config_module.Settings | None = None, test_config: dict | None = None
) -> Flask:
    """Build the app. `settings` defaults to the environment's."""
    settings = settings or config_module.from_env()
    settings.check_production()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        SESSION_COOKIE_NAME="cajex_session",
        CAJEX_DEVELOPMENT=settings.development,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["cajex.settings"] = settings
    log.configure()
    app.extensions["cajex.pool"] = db.make_pool(
        settings.database_url, settings.pool_min, settings.pool_max, name="web"
    )
    # The sign-in pages' own login (cajex_signin): only they open sessions,
    # link identities and provision from SSO (see db/bootstrap.sql).
    app.extensions["cajex.signin_pool"] = db.make_pool(
        settings.signin_url, 1, max(2, settings.pool_max // 2), name="signin"
    )
    # Stripe's webhook has a login of its own (cajex_webhook), the one role
    # that may apply an event to any workspace.
    app.extensions["cajex.webhook_pool"] = db.make_pool(
        settings.webhook_url, 1, 2, name="webhook"
    )

    from cajex.web import auth, errors, middleware

    middleware.init_app(app)
    auth.init_app(app)
    errors.init_app(app)

    # Every module in cajex.web.views that defines `bp` is registered; a
    # module may also say `development_only = True`, and then production never
    # registers it (the development mailbox).
    from cajex.web import views

    for info in sorted(pkgutil.iter_modules(views.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cajex.web.views.{info.name}")
        if not hasattr(module, "bp"):
            continue
        if getattr(module, "development_only", False) and not settings.development:
            continue
        app.register_blueprint(module.bp)
        if hasattr(module, "init_app"):
            module.init_app(app)
    logging.getLogger(__name__).debug("app created")
    return app
