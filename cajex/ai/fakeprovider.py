"""A stand-in AI provider on loopback for tests and benchmarks: a real HTTP
server speaking the Anthropic Messages API (POST /v1/messages) and OpenAI
chat completions (POST /v1/chat/completions), with usage fields.

The model name picks the behaviour: "slow-<seconds>" sleeps first,
"fail-<status>" answers with that HTTP error, "long" sends an answer far
longer (and with more output tokens) than max_tokens asked for; any other
model answers at once. Requests must carry `api_key`; each one is recorded
(path, model, key) in `requests`.

    with FakeProvider(api_key="sk-test") as fake:
        fake.url  # http://127.0.0.1:<port>
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cajex.localservices import free_port


class FakeProvider:
    def __init__(self, api_key: str, input_tokens: int = 40, output_tokens: int = 25):
        self.api_key = api_key
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.requests: list[dict] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    or b"{}"
                )
                if self.path.endswith("/v1/messages"):
                    # The client sends x-api-key or, in newer versions, a bearer token.
                    key = self.headers.get("x-api-key") or (
                        self.headers.get("Authorization") or ""
                    ).removeprefix("Bearer ")
                    kind = "anthropic"
                elif self.path.endswith("/chat/completions"):
                    key = (self.headers.get("Authorization") or "").removeprefix(
                        "Bearer "
                    )
                    kind = "openai"
                else:
                    return self._send(
                        404, {"error": {"type": "not_found", "message": "no such path"}}
                    )
                model = str(body.get("model", ""))
                owner.requests.append(
                    {
                        "path": self.path,
                        "model": model,
                        "key": key,
                        "max_tokens": body.get("max_tokens"),
                    }
                )
                if key != owner.api_key:
                    return self._send(
                        401,
                        {
                            "type": "error",
                            "error": {
                                "type": "authentication_error",
                                "message": "invalid x-api-key",
                            },
                        },
                    )
                if model.startswith("slow-"):
                    time.sleep(float(model.split("-", 1)[1]))
                if model.startswith("fail-"):
                    status = int(model.split("-", 1)[1])
                    return self._send(
                        status,
                        {
                            "type": "error",
                            "error": {
                                "type": "overloaded_error"
                                if status >= 500
                                else "rate_limit_error",
                                "message": "try later",
                            },
                        },
                    )
                max_tokens = int(body.get("max_tokens") or 16)
                if model == "long":
                    text, out_tokens = "word " * (max_tokens * 20), max_tokens * 5
                else:
                    text, out_tokens = (
                        "A short drafted summary.",
                        min(owner.output_tokens, max_tokens),
                    )
                if kind == "anthropic":
                    return self._send(
                        200,
                        {
                            "id": "msg_test",
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [{"type": "text", "text": text}],
                            "stop_reason": "end_turn",
                            "stop_sequence": None,
                            "usage": {
                                "input_tokens": owner.input_tokens,
                                "output_tokens": out_tokens,
                            },
                        },
                    )
                return self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": owner.input_tokens,
                            "completion_tokens": out_tokens,
                            "total_tokens": owner.input_tokens + out_tokens,
                        },
                    },
                )

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("retry-after", "1")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
