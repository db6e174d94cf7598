"""A small OpenAI-compatible HTTP server (stdlib only): a table of routes, fault injection, request counters.

Routes map (method, path template) to a handler `handler(body: dict, **path_params) -> (status, body)`, where the
body is the request's JSON (POST), its query parameters (GET) or its multipart form (file uploads: a part with a
filename arrives as {"filename", "content"}), and the answer's body is a dict (JSON) or bytes (a file's content).
`add_route` extends the server: fine_tuning.py adds files and fine-tuning jobs. Every request to a /v1 route may
meet an injected fault (`Faults`), as a busy real API would: 429 or 500 before the request is handled, or
"drop": the request is handled, then the connection closes without an answer (the client cannot know whether
it went through). With `api_key` set, a /v1 request without that bearer key gets 401. `RateLimits` limits chat
completions as the OpenAI API does: requests and tokens per minute, a 429 with retry-after-ms beyond them, and the
x-ratelimit-* headers on every answer. GET /stats (not part of the OpenAI API) returns the counters: requests,
faults, rate-limited requests, requests per route, and what the handlers count.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import random
import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Sequence, Union
from urllib.parse import parse_qsl

from ..openai_limits import Bucket, estimate_tokens, format_duration
from .models import Models

Handler = Callable[..., "tuple[int, Union[dict, bytes]]"]
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}
DROP = "drop"  # a fault: the request is handled, the answer is never sent


def error(status: int, message: str, code: Optional[str] = None) -> tuple[int, dict]:
    return status, {
        "error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": None, "code": code}
    }


class Faults:
    """Answers a seeded random share `rate` of requests with a fault drawn from `codes` (HTTP statuses, or "drop").
    `job_fail_rate`: the share of fine-tuning jobs that fail on the server's side (error code server_error)."""

    def __init__(
        self,
        rate: float = 0.0,
        codes: Sequence[Union[int, str]] = (429, 500),
        seed: int = 0,
        retry_after_ms: Optional[int] = None,
        job_fail_rate: float = 0.0,
    ):
        if not 0.0 <= rate < 1.0 or not 0.0 <= job_fail_rate < 1.0:
            raise ValueError(f"fault rates {rate}, {job_fail_rate} must be in [0, 1)")
        self.rate, self.codes, self.retry_after_ms = rate, list(codes), retry_after_ms
        self.job_fail_rate = job_fail_rate
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self._job_rng = random.Random(seed + 1)  # its own stream: which jobs fail does not depend on request timing

    def job_fails(self) -> bool:
        with self._lock:
            return bool(self.job_fail_rate) and self._job_rng.random() < self.job_fail_rate

    def draw(self) -> Optional[Union[int, str]]:
        with self._lock:
            if self.rate and self._rng.random() < self.rate:
                return self._rng.choice(self.codes)
        return None


class RateLimits:
    """Requests and tokens per minute for chat completions, each a bucket that refills continuously and holds
    `burst_s` seconds of its limit (OpenAI enforces its per-minute limits over shorter windows too). A request
    that does not fit both gets 429 and is not counted against them; tokens are `estimate_tokens` of the body."""

    def __init__(
        self,
        requests_per_minute: Optional[float] = None,
        tokens_per_minute: Optional[float] = None,
        burst_s: float = 1.0,
    ):
        limits = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        self.buckets = {k: Bucket(v, max(1.0, v * burst_s / 60)) for k, v in limits.items() if v}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def admit(self, body: dict) -> tuple[float, dict]:
        """(0, headers) and the request counted, or (seconds until it would fit, headers) and nothing counted."""
        need = {"requests": 1, "tokens": estimate_tokens(body)}
        with self._lock:
            wait = max(b.wait_for(need[k]) for k, b in self.buckets.items())
            if wait <= 0:
                for k, b in self.buckets.items():
                    b.take(need[k])
            headers = {}
            for k, b in self.buckets.items():
                headers.update(
                    {
                        f"x-ratelimit-limit-{k}": f"{b.per_minute:g}",
                        f"x-ratelimit-remaining-{k}": str(max(0, math.floor(b.level))),
                        f"x-ratelimit-reset-{k}": format_duration(b.time_to_full()),
                    }
                )
        return wait, headers


def parse_form(content_type: str, raw: bytes) -> dict:
    """A multipart/form-data body as {field: text} and, for file parts, {field: {"filename", "content"}}."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    form = {}
    for part in msg.iter_parts():
        name, filename = part.get_param("name", header="content-disposition"), part.get_filename()
        content = part.get_payload(decode=True) or b""
        form[name] = {"filename": filename, "content": content} if filename else content.decode("utf-8")
    return form


def parse_query(query: str) -> dict:
    return dict(parse_qsl(query, keep_blank_values=True))


class OpenAIServer:
    def __init__(
        self,
        chat=None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Optional[Faults] = None,
        api_key: Optional[str] = None,
        rate_limits: Optional[RateLimits] = None,
    ):
        """`chat`: an engine with `.name` and `.complete(body)` (openai_server/chat.py), or a `Models` registry of
        several (openai_server/models.py: the base model and the fine-tuned ones)."""
        self.chat = chat if chat is None or isinstance(chat, Models) else Models([chat])
        self.faults, self.api_key, self.rate_limits = faults or Faults(), api_key, rate_limits or RateLimits()
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self.routes: dict[tuple[str, str], Handler] = {}
        self._templates: list[tuple[str, re.Pattern, str]] = []
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
        """`path` may hold `{name}` segments (e.g. /v1/files/{file_id}): they reach the handler as keywords."""
        self.routes[(method, path)] = handler
        if "{" in path:
            self._templates.append((method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), path))

    def route(self, method: str, path: str) -> tuple[Optional[str], dict]:
        """(the route's template, its path parameters) for a request path; (None, {}) when no route matches."""
        if (method, path) in self.routes:
            return path, {}
        for m, pattern, template in self._templates:
            match = pattern.match(path) if m == method else None
            if match:
                return template, match.groupdict()
        return None, {}

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.stats)

    def count(self, *keys: str) -> None:
        with self._lock:
            self.stats.update(keys)

    # --- OpenAI endpoints ---

    def list_models(self, body: dict) -> tuple[int, dict]:
        names = self.chat.names() if self.chat else []
        return 200, {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "sgtr-em"} for n in names],
        }

    def chat_completions(self, body: dict) -> tuple[int, dict]:
        engine = self.chat.get(body.get("model")) if self.chat else None
        if engine is None:
            return error(
                404,
                f"The model {body.get('model')!r} does not exist; this server serves "
                f"{self.chat.names() if self.chat else []}",
                "model_not_found",
            )
        try:
            out = engine.complete(body)
        except ValueError as e:
            return error(400, str(e))
        self.count("completions")
        return 200, out

    # --- HTTP plumbing ---

    def dispatch(
        self, method: str, path: str, raw: bytes, headers: Optional[dict] = None
    ) -> tuple[int, object, dict, bool]:
        """(status, body, extra headers, drop the connection) for one request; counts it, may inject a fault."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        path, _, query = path.partition("?")
        path = path.rstrip("/")
        template, params = self.route(method, path)
        fault = None
        if path.startswith("/v1"):
            self.count("requests", f"{method} {template or path}")
            fault = self.faults.draw() if template else None
            if fault is not None and fault != DROP:
                self.count("faults", f"faults_{fault}")
                extra = {"retry-after-ms": str(self.faults.retry_after_ms)} if self.faults.retry_after_ms else {}
                return (*error(fault, f"injected fault {fault}: please retry"), extra, False)
            if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
                return (*error(401, "Incorrect API key provided", "invalid_api_key"), {}, False)
        if template is None:
            return (*error(404, f"no route {method} {path}"), {}, False)
        try:
            if method == "GET":
                body = parse_query(query)
            elif headers.get("content-type", "").startswith("multipart/form-data"):
                body = parse_form(headers["content-type"], raw)
            else:
                body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return (*error(400, f"request body is not JSON: {e}"), {}, False)
        limit_headers = {}
        if template == "/v1/chat/completions" and self.rate_limits:
            wait, limit_headers = self.rate_limits.admit(body)
            if wait > 0:
                self.count("rate_limited")
                limit_headers["retry-after-ms"] = str(math.ceil(wait * 1000))
                return (
                    *error(429, f"Rate limit reached: retry in {format_duration(wait)}", "rate_limit_exceeded"),
                    limit_headers,
                    False,
                )
        status, out = self.routes[(method, template)](body, **params)
        if fault == DROP:  # handled, but the answer is lost
            self.count("faults", f"faults_{DROP}")
        return status, out, limit_headers, fault == DROP

    def _handler_class(self):
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    status, body, headers, drop = server.dispatch(method, self.path, raw, dict(self.headers.items()))
                except Exception as e:  # a bug in a handler answers 500, as an API would
                    status, body, headers, drop = (*error(500, f"{type(e).__name__}: {e}"), {}, False)
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_DELETE(self):  # noqa: N802
                self._serve("DELETE")

            def log_message(self, fmt, *args):  # quiet: the counters say what happened
                pass

        return RequestHandler

    def start(self) -> OpenAIServer:
        """Serves in a background thread (tests); `serve_forever` blocks (the command line)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
