"""A tiny OTLP/HTTP receiver on 127.0.0.1 for tests: decodes what exporters send with opentelemetry-proto.

    with OTLPReceiver() as rx:
        ...export to rx.endpoint ("http://127.0.0.1:PORT")...
        rx.wait_for(lambda: rx.spans(), timeout=10)

``status`` / ``delay_s`` script failures and slowness. Only protobuf bodies (what the OTLP/HTTP
exporters send), gzip or not.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_KINDS = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    inner = getattr(value, kind)
    if kind == "array_value":
        return [any_value(v) for v in inner.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in inner.values}
    return inner


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    def do_POST(self) -> None:
        rx = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        kinds = _KINDS.get(self.path)
        with rx._lock:
            rx.hits.append(self.path)
        if rx.delay_s:
            time.sleep(rx.delay_s)
        if kinds is None:
            self._reply(404, b"")
            return
        if rx.status != 200:
            self._reply(rx.status, b"")
            return
        request_cls, response_cls = kinds
        message = request_cls()
        message.ParseFromString(body)
        with rx._lock:
            rx.requests.setdefault(self.path, []).append(message)
            rx.headers.append(dict(self.headers))
        self._reply(200, response_cls().SerializeToString())

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "OTLPReceiver"


class OTLPReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, list[Any]] = {}
        self.headers: list[dict[str, str]] = []
        self.hits: list[str] = []
        self.status = 200
        self.delay_s = 0.0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OTLPReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.delay_s = 0.0
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- decoded views ----------------------------------------------------------------------------
    def _messages(self, path: str) -> list[Any]:
        with self._lock:
            return list(self.requests.get(path, []))

    def spans(self) -> list[dict[str, Any]]:
        out = []
        for request in self._messages("/v1/traces"):
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append({
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "kind": span.kind,
                            "attributes": attributes(span.attributes),
                            "resource": resource,
                            "scope": ss.scope.name,
                            "status": span.status.code,
                        })
        return out

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """name -> metric dicts (unit, type, points: [{attributes, ...values}]), across requests."""
        out: dict[str, list[dict[str, Any]]] = {}
        for request in self._messages("/v1/metrics"):
            for rm in request.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        data = getattr(metric, kind)
                        points = []
                        for point in data.data_points:
                            entry: dict[str, Any] = {"attributes": attributes(point.attributes)}
                            if kind == "histogram":
                                entry.update(count=point.count, sum=point.sum, bounds=list(point.explicit_bounds), buckets=list(point.bucket_counts))
                            else:
                                entry["value"] = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                            points.append(entry)
                        info = {"unit": metric.unit, "type": kind, "points": points, "resource": resource, "scope": sm.scope.name}
                        if kind == "sum":
                            info["monotonic"] = data.is_monotonic
                        out.setdefault(metric.name, []).append(info)
        return out

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for request in self._messages("/v1/logs"):
            for rl in request.resource_logs:
                resource = attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        out.append({
                            "event_name": record.event_name,
                            "body": any_value(record.body),
                            "attributes": attributes(record.attributes),
                            "trace_id": record.trace_id.hex(),
                            "span_id": record.span_id.hex(),
                            "severity": record.severity_text,
                            "resource": resource,
                        })
        return out

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)
