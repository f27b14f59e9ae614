"""The one way cajex calls an AI provider.

Contract: `Gateway(master).complete(scope, task, prompt)` returns
an `AIResult` or raises `cajex.errors.AppError` with a stable code:

* `plan_feature` (402): the workspace's plan, or billing, does not allow AI;
* `ai_off` / `ai_not_configured` (409): switched off, or no API key;
* `quota_exceeded` (429): the period's (or the task's) budget cannot cover
  the call; the admins were told once this period;
* `ai_timeout` (504), `ai_provider_busy` (503), `ai_provider_error` (502):
  the provider failed; the reservation was returned;
* `ai_provider_refused` (409): the workspace's base URL names, or resolves
  to, an address the gateway may not call (cajex.ai.netguard); nothing was
  sent and the reservation was returned.

`scope` (cajex.db.Scope) names the workspace's verified context and where
its connections come from. The gateway runs two short transactions, each
sent whole in one round trip (cajex.db.commit_with), and never holds one
open across the provider call:

1. reserve (cajex_private.ai_reserve): refuse at once when AI is off or not
   on the plan, and no key is decrypted then; otherwise one conditional
   update takes the estimated input plus the answer limit from the budget
   (concurrent calls can never overspend), the transaction commits in the
   same message, and the sealed key is opened with the wrapped data key
   that came with it;
2. call the provider with its official client (cajex.ai.providers);
3. settle (cajex_private.ai_settle): record actual input and output tokens
   by workspace, model, task and day and return the unused reservation; a
   failed call returns all of it. With the context secret, settling runs in
   a service context of the workspace (job:ai_settle), not the member's: a
   member removed or signed out during the call (or a revoked session) must
   not leave the tokens reserved. The reservation id, unguessable and read
   only within its workspace, binds the settlement. A call that never
   settles (a worker killed mid-call) is released by the workspace's next
   reservation once it is older than the longest provider timeout.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from cajex import context, crypto, db, log, metrics
from cajex.ai import netguard
from cajex.ai import providers as providers_mod
from cajex.errors import AppError

_log = log.get("cajex.ai")

TABLE, COLUMN = "cajex.ai_settings", "api_key"

_REFUSALS = {
    "plan": (
        402,
        "plan_feature",
        "AI is not included in this workspace's plan right now.",
    ),
    "off": (409, "ai_off", "AI is switched off for this workspace."),
    "unconfigured": (
        409,
        "ai_not_configured",
        "AI is not set up for this workspace yet: an admin adds the provider's API key.",
    ),
}

_PROVIDER_ERRORS = {
    "timeout": (
        504,
        "ai_timeout",
        "The AI provider did not answer in time. Nothing was charged.",
    ),
    "rate_limited": (
        503,
        "ai_provider_busy",
        "The AI provider is rate limiting this workspace. Try again shortly.",
    ),
    "auth": (
        502,
        "ai_provider_auth",
        "The AI provider refused the workspace's API key.",
    ),
    "failed": (
        502,
        "ai_provider_error",
        "The AI provider failed. Nothing was charged.",
    ),
    "bad_answer": (
        502,
        "ai_provider_error",
        "The AI provider sent an answer cajex cannot read.",
    ),
    "refused": (
        409,
        "ai_provider_refused",
        "The workspace's AI provider URL points to an address cajex may not call:"
        " an admin sets the provider's public URL. Nothing was charged.",
    ),
}


@dataclasses.dataclass(frozen=True)
class AIResult:
    text: str
    task: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    reserved_tokens: int
    truncated: bool

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_json(self) -> dict:
        return {
            "text": self.text,
            "task": self.task,
            "provider": self.provider,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "truncated": self.truncated,
        }


def estimate_input_tokens(*texts: str) -> int:
    """A generous input estimate: tokens are at least about two bytes of UTF-8."""
    return sum(len(t.encode()) for t in texts) // 2 + 64


def budget_message(row) -> str:
    """The pause message of a 'budget' refusal: what is spent, and what resumes AI."""
    used, limit = int(row["used_tokens"] or 0), int(row["limit_tokens"] or 0)
    needed = int(row["reserved_tokens"] or 0)
    return (
        f"This workspace's AI budget for this {row['period']} is spent: {used} of {limit} "
        f"tokens used, and this request may need up to {needed}. AI is paused until the "
        "next period or until an admin raises the budget."
    )


class Gateway:
    """Reserve, call, settle. `providers` maps a provider name to an adapter.

    `context_secret` (cajex.config.Settings.context_secret) signs the service
    context settlements run in; without it they run in the caller's scope.
    `allow_private_hosts`: the deployment's CAJEX_AI_ALLOW_PRIVATE_HOSTS
    (None: read from the environment).
    """

    def __init__(
        self,
        master,
        providers: dict[str, Callable] | None = None,
        *,
        context_secret: str | None = None,
        allow_private_hosts: bool | None = None,
    ):
        self.master = master
        self.providers = dict(providers_mod.DEFAULT if providers is None else providers)
        self.context_secret = context_secret or None
        self.allow_private_hosts = (
            netguard.default_allow_private()
            if allow_private_hosts is None
            else bool(allow_private_hosts)
        )

    def _settle_scope(self, scope: db.Scope) -> db.Scope:
        """Where settling runs: the workspace's service context when it can be signed."""
        if self.context_secret is None:
            return scope
        # A fresh token per settlement: the call may have outlived any minute-long token.
        token = context.service_token(
            self.context_secret, scope.workspace_id, "ai_settle"
        )
        return db.Scope(
            scope.connection, token, str(scope.workspace_id), scope.workspace_id
        )

    def complete(
        self,
        scope: db.Scope,
        task: str,
        prompt: str,
        *,
        system: str = "You are a concise assistant.",
    ) -> AIResult:
        started = time.perf_counter()
        workspace_id = scope.workspace_id
        row = _one(
            scope,
            "select * from cajex_private.ai_reserve($1, $2)",
            (task, estimate_input_tokens(system, prompt)),
        )
        status = row["status"]
        if status == "ok":
            try:
                api_key = crypto.decrypt_with_wrapped_key(
                    self.master,
                    workspace_id,
                    TABLE,
                    COLUMN,
                    str(workspace_id),
                    bytes(row["api_key"]),
                    row["data_key"],
                    row["data_key_master"],
                ).decode()
            except crypto.CryptoError:
                api_key = None
        if status != "ok":
            _log.info(
                "ai.refused", workspace_id=str(workspace_id), task=task, reason=status
            )
            if status == "budget":
                metrics.QUOTA_PAUSES.inc()
                raise AppError(429, "quota_exceeded", budget_message(row))
            raise AppError(*_REFUSALS[status])

        reservation = row["reservation_id"]
        reserved = int(row["reserved_tokens"])
        settle_scope = self._settle_scope(scope)
        if api_key is None:
            self._settle(settle_scope, reservation, row["model"], 0, 0, failed=True)
            _log.warning("ai.key_unreadable", workspace_id=str(workspace_id))
            raise AppError(
                409,
                "ai_not_configured",
                "The workspace's AI key cannot be read: an admin enters it again.",
            )
        request = providers_mod.Request(
            provider=row["provider"],
            model=row["model"],
            api_key=api_key,
            base_url=row["base_url"],
            system=system,
            prompt=prompt,
            max_output_tokens=int(row["max_output_tokens"]),
            timeout_seconds=float(row["timeout_seconds"]),
            allow_private_hosts=self.allow_private_hosts,
        )
        del api_key
        overhead = time.perf_counter() - started
        call_started = time.perf_counter()
        try:
            # Checked before any adapter runs (the official clients check
            # again when they connect, and pin the checked address).
            try:
                netguard.check_url(request.base_url, self.allow_private_hosts)
                answer = self.providers[request.provider](request)
            except netguard.Refused:
                raise providers_mod.ProviderError("refused") from None
        except providers_mod.ProviderError as exc:
            self._settle(settle_scope, reservation, request.model, 0, 0, failed=True)
            _log.warning(
                "ai.provider_failed",
                workspace_id=str(workspace_id),
                task=task,
                provider=request.provider,
                kind=exc.kind,
                status=exc.status,
            )
            raise AppError(
                *_PROVIDER_ERRORS.get(exc.kind, _PROVIDER_ERRORS["failed"])
            ) from None
        except BaseException:
            self._settle(settle_scope, reservation, request.model, 0, 0, failed=True)
            raise
        provider_seconds = time.perf_counter() - call_started
        settle_started = time.perf_counter()

        # An over-long answer (more than the limit asked for) is cut to the
        # limit's worth of text and charged no more than was reserved.
        limit = request.max_output_tokens
        text, truncated = answer.text, False
        if answer.output_tokens > limit or len(text) > limit * 8:
            text, truncated = text[: limit * 4], True
        charged = self._settle(
            settle_scope,
            reservation,
            answer.model or request.model,
            answer.input_tokens,
            answer.output_tokens,
            failed=False,
        )
        overhead += time.perf_counter() - settle_started
        self.last_overhead_seconds = overhead
        _log.info(
            "ai.completed",
            workspace_id=str(workspace_id),
            task=task,
            provider=request.provider,
            model=request.model,
            input_tokens=charged[0],
            output_tokens=charged[1],
            reserved_tokens=reserved,
            truncated=truncated,
            provider_ms=round(provider_seconds * 1000, 1),
        )
        return AIResult(
            text,
            task,
            request.provider,
            answer.model or request.model,
            charged[0],
            charged[1],
            reserved,
            truncated,
        )

    @staticmethod
    def _settle(
        scope: db.Scope,
        reservation,
        model: str,
        input_tokens: int,
        output_tokens: int,
        failed: bool,
    ) -> tuple[int, int]:
        row = _one(
            scope,
            "select * from cajex_private.ai_settle($1, $2, $3, $4, $5)",
            (reservation, model, input_tokens, output_tokens, failed),
        )
        return (int(row["input_tokens"]), int(row["output_tokens"])) if row else (0, 0)


def _one(scope: db.Scope, query: str, params: tuple) -> dict | None:
    """Run `query` in a transaction of its own, committed in the same message.

    Reserving and settling update the workspace's one counter row: with the
    COMMIT in the message, its lock is released as soon as the server is
    done, and concurrent calls of one workspace queue only for the server's
    own work.
    """
    rows = scope.commit_with(query, params)
    return rows[0] if rows else None
