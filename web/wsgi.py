"""The production entry point: `gunicorn cajex.web.wsgi:app`.

Settings come from the environment (see cajex/config.py); production refuses
to start without its secrets.
"""

from cajex.web import create_app

app = create_app()
