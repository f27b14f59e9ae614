"""Test helpers for onboarding and branding: images (good and hostile), an
outbox worker that sends mail to the development mailbox, and the real app
served on a loopback port for the browser tests.

The fixtures are registered by cajex.testing.plugin."""

from __future__ import annotations

import dataclasses
import io
import struct
import threading
import zlib

import pytest

from cajex import db
from cajex.web.middleware import close_pools


def image(fmt: str = "PNG", size=(64, 32), colour=(200, 30, 60), text_chunk: str | None = None) -> bytes:
    """A small real image; for PNG `text_chunk` goes into a tEXt comment."""
    from PIL import Image, PngImagePlugin

    img = Image.new("RGB", size, colour)
    out = io.BytesIO()
    if fmt == "PNG" and text_chunk is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", text_chunk)
        img.save(out, "PNG", pnginfo=info)
    else:
        img.save(out, fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a
    decompression bomb's calling card): valid signature and IHDR, one empty
    IDAT, IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.fixture
def mail_worker(settings):
    """Runs due outbox jobs the way the RQ worker does, with development mail
    (messages land in cajex.email_deliveries)."""
    from cajex.jobs import registry, runner

    registry.load_all()
    job_settings = dataclasses.replace(settings, env="development")
    pool = db.make_pool(settings.worker_url, 1, 2, name="test-mail-worker")
    saved = dict(runner._state)
    runner._state.update(pool=pool, settings=job_settings)

    def run_all() -> list[str]:
        with pool.connection() as conn:
            ids = [r["id"] for r in conn.execute(
                "select id from cajex_private.claim_outbox(100, '1 hour'::interval)"
            ).fetchall()]
        return [runner.run_outbox_job(i) for i in ids]

    yield run_all
    runner._state.clear()
    runner._state.update(saved)
    pool.close()


@dataclasses.dataclass
class LiveServer:
    url: str
    app: object


@pytest.fixture
def live_server(settings):
    """The real app (development mode, so the dev mailbox is there) on a
    loopback port, served from a thread against this test's database."""
    from werkzeug.serving import make_server

    from cajex.web import create_app

    server = make_server("127.0.0.1", 0, None, threaded=True)
    port = server.server_port
    live_settings = dataclasses.replace(settings, env="development",
                                        public_url=f"http://127.0.0.1:{port}", pool_max=6)
    app = create_app(live_settings)
    server.app = app
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield LiveServer(f"http://127.0.0.1:{port}", app)
    server.shutdown()
    thread.join(timeout=5)
    close_pools(app)
