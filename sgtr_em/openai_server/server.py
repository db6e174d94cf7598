"""A small OpenAI-compatible HTTP server (stdlib only): a table of routes, fault injection, request counters.

Routes map (method, path) to a handler `handler(body: dict) -> (status, body: dict)`; `add_route` extends the
server (a later endpoint such as /v1/files or /v1/fine_tuning/jobs is one more handler). Every request to a
/v1 route may be answered with an injected 429 or 500 instead (`Faults`), as a busy real API would; GET /stats
(not part of the OpenAI API) returns the counters: requests, faults, and requests per route.
"""
from __future__ import annotations

import json
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Sequence

Handler = Callable[[dict], "tuple[int, dict]"]
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_exceeded", 500: "server_error",
               503: "server_error"}


def error(status: int, message: str, code: Optional[str] = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": None,
                              "code": code}}


class Faults:
    """Answers a seeded random share `rate` of requests with an error status drawn from `codes`."""

    def __init__(self, rate: float = 0.0, codes: Sequence[int] = (429, 500), seed: int = 0,
                 retry_after_ms: Optional[int] = None):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"fault rate {rate} must be in [0, 1)")
        self.rate, self.codes, self.retry_after_ms = rate, list(codes), retry_after_ms
        self._rng, self._lock = random.Random(seed), threading.Lock()

    def draw(self) -> Optional[int]:
        with self._lock:
            if self.rate and self._rng.random() < self.rate:
                return self._rng.choice(self.codes)
        return None


class OpenAIServer:
    def __init__(self, chat=None, *, host: str = "127.0.0.1", port: int = 0, faults: Optional[Faults] = None):
        """`chat`: an engine with `.name` and `.complete(body) -> chat.completion dict` (openai_server/chat.py)."""
        self.chat, self.faults = chat, faults or Faults()
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self.routes: dict[tuple[str, str], Handler] = {}
        self.add_route("GET", "/v1/models", self.list_models)
        self.add_route("POST", "/v1/chat/completions", self.chat_completions)
        self.add_route("GET", "/stats", lambda body: (200, self.snapshot()))
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.stats)

    def count(self, *keys: str) -> None:
        with self._lock:
            self.stats.update(keys)

    # --- OpenAI endpoints ---

    def list_models(self, body: dict) -> tuple[int, dict]:
        names = [self.chat.name] if self.chat else []
        return 200, {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "sgtr-em"}
                                                for n in names]}

    def chat_completions(self, body: dict) -> tuple[int, dict]:
        if self.chat is None:
            return error(404, "this server has no chat model")
        if body.get("model") != self.chat.name:
            return error(404, f"The model {body.get('model')!r} does not exist; this server serves {self.chat.name!r}",
                         "model_not_found")
        try:
            out = self.chat.complete(body)
        except ValueError as e:
            return error(400, str(e))
        self.count("completions")
        return 200, out

    # --- HTTP plumbing ---

    def dispatch(self, method: str, path: str, raw: bytes) -> tuple[int, dict, dict]:
        """(status, body, extra headers) for one request; counts it, and may inject a fault."""
        path = path.split("?", 1)[0].rstrip("/")
        handler = self.routes.get((method, path))
        if path.startswith("/v1"):
            self.count("requests", f"{method} {path}")
            fault = self.faults.draw() if handler else None
            if fault:
                self.count("faults", f"faults_{fault}")
                headers = {"retry-after-ms": str(self.faults.retry_after_ms)} if self.faults.retry_after_ms else {}
                return (*error(fault, f"injected fault {fault}: please retry"), headers)
        if handler is None:
            return (*error(404, f"no route {method} {path}"), {})
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            return (*error(400, f"request body is not JSON: {e}"), {})
        return (*handler(body), {})

    def _handler_class(self):
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    status, body, headers = server.dispatch(method, self.path, raw)
                except Exception as e:  # a bug in a handler answers 500, as an API would
                    status, body, headers = (*error(500, f"{type(e).__name__}: {e}"), {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def log_message(self, fmt, *args):  # quiet: the counters say what happened
                pass

        return RequestHandler

    def start(self) -> "OpenAIServer":
        """Serves in a background thread (tests); `serve_forever` blocks (the command line)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
