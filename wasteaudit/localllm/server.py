"""A scripted OpenAI- and Anthropic-compatible HTTP server on 127.0.0.1.

Tests and the demo drive the real SDKs over real HTTP against it: each request takes the
next scripted :class:`Reply` (or asks a handler), so a test can serve exactly the bytes a
provider would — JSON bodies, server-sent events, retryable errors, slow or cut streams —
and then inspect what the SDK actually sent (:attr:`LocalLLMServer.requests`).
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    """One scripted HTTP response.

    Exactly one of ``json``, ``body`` or ``sse`` is the payload. ``sse`` items are raw
    event texts (``"data: {...}"`` or ``"event: x\\ndata: {...}"``), or bytes sent as they are
    (invalid UTF-8 included); each is sent as its own chunk followed by a blank line.
    ``cut_after`` drops the connection after that many events without finishing the chunked
    body, as a network failure mid-stream does.
    """

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    sse: list[str | bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    event_delay_s: float = 0.0
    cut_after: int | None = None


@dataclass
class RecordedRequest:
    """What the SDK sent: enough to assert on injected options and headers."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


Handler = Callable[[RecordedRequest], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "LocalLLMServer"

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-response (an early break) is normal here, not a traceback.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it every keep-alive response waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        owner = self.server.owner
        reply = owner._next_reply(request)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.sse is not None:
            self._send_sse(reply)
        else:
            self._send_body(reply)

    def _send_body(self, reply: Reply) -> None:
        if reply.json is not None:
            payload = json.dumps(reply.json).encode()
            ctype = "application/json"
        else:
            raw = reply.body or b""
            payload = raw.encode() if isinstance(raw, str) else raw
            ctype = "application/json"
        self.send_response(reply.status)
        self.send_header("content-type", reply.headers.get("content-type", ctype))
        for key, value in reply.headers.items():
            if key.lower() != "content-type":
                self.send_header(key, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_sse(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        for key, value in reply.headers.items():
            if key.lower() != "content-type":
                self.send_header(key, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        events = reply.sse or []
        try:
            for number, event in enumerate(events):
                if reply.cut_after is not None and number >= reply.cut_after:
                    self.wfile.flush()
                    # Abort mid-body: the client sees an incomplete chunked response.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = event.rstrip(b"\n") + b"\n\n" if isinstance(event, bytes) else (event.rstrip("\n") + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if reply.event_delay_s:
                    time.sleep(reply.event_delay_s)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client stopped reading (early break, close): a normal outcome here.
            self.close_connection = True


class LocalLLMServer:
    """Start with ``with LocalLLMServer() as server:``; script with :meth:`enqueue`.

    ``openai_base_url`` and ``anthropic_base_url`` are what the SDK clients take.
    Requests beyond the script get ``handler(request)`` if one was given, else a 500 error
    body that names the missing reply, so a test never hangs on an unscripted call.
    """

    def __init__(self, handler: Handler | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.requests: list[RecordedRequest] = []
        self._replies: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._server = _Server((host, port), _RequestHandler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def clear(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        if self.handler is not None:
            return self.handler(request)
        return Reply(
            status=500,
            json={"error": {"type": "server_error", "message": f"no scripted reply for {request.path}"}},
            headers={"x-should-retry": "false"},
        )

    def start(self) -> "LocalLLMServer":
        if self._thread is None:
            self._thread = threading.Thread(target=lambda: self._server.serve_forever(poll_interval=0.05), name="wasteaudit-localllm", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "LocalLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
