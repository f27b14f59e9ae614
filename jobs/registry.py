"""Job kinds and their handlers.

A handler module registers itself with `@handler("kind")`; every module in
cajex.jobs is imported by `load_all()`, so an area adds a job by adding a
module. A handler receives a `JobContext` and must be idempotent: the outbox
delivers at least once.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

_HANDLERS: dict[str, Callable] = {}


@dataclasses.dataclass
class JobContext:
    """What a handler gets: the outbox row and the worker's resources."""

    id: int
    kind: str
    workspace_id: str | None
    payload: dict
    attempts: int
    pool: object
    settings: object

    def service(self, label: str | None = None):
        """A transaction acting for this job's workspace (see cajex.db.as_service)."""
        from cajex import db

        return db.as_service(
            self.pool,
            self.settings.context_secret,
            self.workspace_id,
            label or self.kind.replace(".", "_"),
        )


def handler(kind: str):
    def register(fn):
        if kind in _HANDLERS and _HANDLERS[kind] is not fn:
            raise RuntimeError(f"job kind {kind} registered twice")
        _HANDLERS[kind] = fn
        return fn

    return register


def get(kind: str) -> Callable | None:
    return _HANDLERS.get(kind)


def kinds() -> list[str]:
    return sorted(_HANDLERS)


def load_all() -> None:
    from cajex import jobs

    for info in pkgutil.iter_modules(jobs.__path__):
        importlib.import_module(f"cajex.jobs.{info.name}")
