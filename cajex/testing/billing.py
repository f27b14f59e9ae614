"""Billing test support: localstripe as a real process on loopback, a
counting proxy in front of it (how many Stripe calls, with which idempotency
keys), webhook signing exactly as Stripe signs, and a job driver that runs
outbox rows through the real runner.

Checkout Sessions, which localstripe lacks, are answered by the proxy in
the shape Stripe answers them (`checkout_session`). localstripe ignores
Idempotency-Key; `IdempotencyProxy` honours it as Stripe documents, for
tests of what a repeated key does.

Fixtures (loaded by cajex.testing.plugin): `localstripe` (session),
`stripe_counter`, `billing_settings`, `billing_app`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from cajex.localservices import free_port
from cajex.web.middleware import close_pools

#: The plan ids created in localstripe, used where Stripe takes a price.
PRICES = {
    "basic": "cajex-basic",
    "pro": "cajex-pro",
    "team": "cajex-team",
    "enterprise": "cajex-enterprise",
}
WEBHOOK_SECRETS = ("whsec_testsecretone0001", "whsec_testsecrettwo0002")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`: t=<time>,v1=HMAC-SHA256("t.payload")."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + payload, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def event(
    kind: str, obj: dict, created: int | None = None, event_id: str | None = None
) -> dict:
    """A Stripe event envelope around `obj`."""
    import secrets as _secrets

    return {
        "id": event_id or "evt_" + _secrets.token_hex(12),
        "object": "event",
        "type": kind,
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def subscription_object(
    sub_id: str,
    customer: str,
    price: str,
    quantity: int,
    status: str = "active",
    cancel_at_period_end: bool = False,
    period_end: int | None = None,
    item_id: str = "si_test",
) -> dict:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "current_period_end": period_end or int(time.time()) + 30 * 86400,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": item_id,
                    "quantity": quantity,
                    "price": {"id": price},
                    "plan": {"id": price},
                }
            ],
        },
    }


def _localstripe_bin() -> str:
    """localstripe's script, next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / "localstripe"
    return (
        str(beside)
        if beside.exists()
        else (shutil.which("localstripe") or "localstripe")
    )


class LocalStripe:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [_localstripe_bin(), "--port", str(self.port), "--from-scratch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/js.stripe.com/v3/", timeout=1)  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("localstripe did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def checkout_session(form_body: str) -> dict:
    """The Checkout Session object Stripe answers `POST /v1/checkout/sessions`
    with, for the form-encoded parameters in `form_body`."""
    import secrets as _secrets

    params = form_params(form_body)
    session_id = "cs_test_" + _secrets.token_hex(12)
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": params.get("mode"),
        "status": "open",
        "customer": params.get("customer"),
        "client_reference_id": params.get("client_reference_id"),
        "success_url": params.get("success_url"),
        "cancel_url": params.get("cancel_url"),
        "metadata": {
            k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[")
        },
        "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        "livemode": False,
    }


def form_params(body: str) -> dict:
    """A recorded form-encoded request body as a flat dict (Stripe's keys)."""
    return dict(parse_qsl(body, keep_blank_values=True))


class CountingProxy:
    """A loopback HTTP proxy to `upstream` that records every request, and
    answers Checkout Session creation itself (localstripe has no Checkout)."""

    def __init__(self, upstream_port: int):
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.calls.append(
                        {
                            "method": self.command,
                            "path": self.path.split("?")[0],
                            "idempotency_key": self.headers.get("Idempotency-Key"),
                            "body": (body or b"").decode(),
                        }
                    )
                if self.command == "POST" and self.path.split("?")[0] == "/v1/checkout/sessions":
                    # localstripe has no Checkout: answer as Stripe does.
                    data = json.dumps(checkout_session((body or b"").decode())).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(
                    "127.0.0.1", upstream_port, timeout=30
                )
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection")
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in (
                        "transfer-encoding",
                        "connection",
                        "content-length",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def writes(self, prefix: str = "/v1/subscriptions/") -> list[dict]:
        """POSTs to paths under `prefix` (subscription updates by default)."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c["method"] == "POST" and c["path"].startswith(prefix)
            ]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class IdempotencyProxy:
    """A loopback proxy to `upstream_port` that honours Idempotency-Key the
    way Stripe documents it (localstripe ignores the header): a POST with a
    key seen before and the same endpoint and parameters is not executed
    again, Stripe's first answer is replayed (with `Idempotent-Replayed:
    true`); with other parameters it is refused, 400 `idempotency_error`.
    Like Stripe, a 5xx answer is not kept. `replayed` lists (key, path) of
    every replay."""

    def __init__(self, upstream_port: int):
        self.replayed: list[tuple[str, str]] = []
        self._cache: dict[str, tuple[bytes, int, bytes]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, data: bytes, replayed: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                key = self.headers.get("Idempotency-Key")
                request = self.path.encode() + b"\n" + body
                if self.command == "POST" and key:
                    with proxy._lock:
                        seen = proxy._cache.get(key)
                        if seen is not None and seen[0] == request:
                            proxy.replayed.append((key, self.path))
                    if seen is not None:
                        if seen[0] != request:
                            error = {
                                "error": {
                                    "type": "idempotency_error",
                                    "message": "Keys for idempotent requests can only"
                                    " be used with the same parameters they were"
                                    " first used with.",
                                }
                            }
                            self._answer(400, json.dumps(error).encode(), True)
                        else:
                            self._answer(seen[1], seen[2], True)
                        return
                conn = http.client.HTTPConnection(
                    "127.0.0.1", upstream_port, timeout=30
                )
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection")
                }
                conn.request(
                    self.command, self.path, body=body or None, headers=headers
                )
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if self.command == "POST" and key and resp.status < 500:
                    with proxy._lock:
                        proxy._cache.setdefault(key, (request, resp.status, data))
                self._answer(resp.status, data, False)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ensure_plans(api_base: str) -> None:
    """The plans localstripe bills by (it has no prices: a plan id stands in)."""
    import stripe

    client = stripe.StripeClient("sk_test_local", base_addresses={"api": api_base})
    for code, plan_id in PRICES.items():
        try:
            client.v1.plans.retrieve(plan_id)
        except stripe.InvalidRequestError:
            client.v1.plans.create(
                params={
                    "id": plan_id,
                    "amount": 1000,
                    "currency": "usd",
                    "interval": "month",
                    "product": {"name": code},
                }
            )


def attach_card(api_base: str, customer_id: str) -> None:
    """Put a test card on file for a customer (what Checkout would leave)."""
    import stripe

    client = stripe.StripeClient("sk_test_local", base_addresses={"api": api_base})
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {
                "number": "4242424242424242",
                "exp_month": 12,
                "exp_year": 2040,
                "cvc": "123",
            },
        }
    )
    client.v1.payment_methods.attach(pm.id, params={"customer": customer_id})
    client.v1.customers.update(
        customer_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )


def run_jobs(
    settings, world, kinds: tuple[str, ...] = ("billing.sync_seats",)
) -> list[str]:
    """Make pending jobs of `kinds` due and run each through the real runner."""
    from cajex import db
    from cajex.jobs import registry, runner

    world.admin.execute(
        "update cajex.outbox set run_after = now() where done_at is null and kind = any(%s)",
        (list(kinds),),
    )
    pool = db.make_pool(settings.worker_url, 1, 3, name="test-billing-jobs")
    saved = dict(runner._state)
    runner._state.clear()
    runner._state.update(pool=pool, settings=settings)
    registry.load_all()
    outcomes = []
    try:
        with pool.connection() as conn:
            rows = conn.execute(
                "select id, kind from cajex_private.claim_outbox(100, %s::interval)",
                ("600 seconds",),
            ).fetchall()
        for row in rows:
            if row["kind"] in kinds:
                outcomes.append(runner.run_outbox_job(row["id"]))
            else:
                conn2 = world.admin
                conn2.execute(
                    "update cajex.outbox set enqueued_at = null where id = %s",
                    (row["id"],),
                )
    finally:
        runner._state.clear()
        runner._state.update(saved)
        pool.close()
    return outcomes


@pytest.fixture(scope="session")
def localstripe():
    server = LocalStripe()
    ensure_plans(server.url)
    yield server
    server.stop()


@pytest.fixture
def stripe_counter(localstripe):
    proxy = CountingProxy(localstripe.port)
    yield proxy
    proxy.close()


@pytest.fixture
def billing_settings(settings, stripe_counter):
    """Settings with Stripe configured, pointed at localstripe through the counter."""
    return dataclasses.replace(
        settings,
        stripe_api_key="sk_test_local",
        stripe_api_base=stripe_counter.url,
        stripe_webhook_secrets=WEBHOOK_SECRETS,
        stripe_prices=dict(PRICES),
        pool_max=12,
    )


@pytest.fixture
def billing_app(billing_settings):
    from cajex.web import create_app

    application = create_app(billing_settings, {"TESTING": True})
    yield application
    close_pools(application)


def post_event(
    client, evt: dict, secret: str = WEBHOOK_SECRETS[0], timestamp=None, body=None
):
    """Deliver `evt` to the webhook endpoint signed the way Stripe signs."""
    payload = body if body is not None else json.dumps(evt).encode()
    return client.post(
        "/api/v1/stripe/webhook",
        data=payload,
        headers={
            "Stripe-Signature": sign(payload, secret, timestamp),
            "Content-Type": "application/json",
        },
    )
