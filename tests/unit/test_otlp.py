"""Span export without sockets: its configuration, the bounded queue, the OTLP JSON it encodes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError, ConnectFault
from fastgw.observe.otlp import SpanExport, sample_max, span_export_for

_DOC: dict[str, Any] = {
    "listeners": [{"name": "main", "bind": "127.0.0.1:8080"}],
    "upstreams": {"up": {"targets": ["127.0.0.1:9000"]}},
    "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
}
ENDPOINT = "http://127.0.0.1:4318/v1/traces"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _otlp(**options: Any) -> Any:
    config = parse_config({**_DOC, "tracing": {"otlp": {"endpoint": ENDPOINT, **options}}}, "gw.yaml")
    assert config.tracing is not None and config.tracing.otlp is not None
    return config.tracing.otlp


@pytest.mark.parametrize(
    ("tracing", "message"),
    [
        ({"otlp": {}}, "gw.yaml: tracing.otlp: missing required key 'endpoint'"),
        ({"otlp": {"endpoint": "127.0.0.1:4318"}}, "gw.yaml: tracing.otlp.endpoint: expected an http://"),
        ({"otlp": {"endpoint": "grpc://c:4317"}}, "gw.yaml: tracing.otlp.endpoint: expected an http://"),
        ({"otlp": {"endpoint": "http://c:99999/"}}, "gw.yaml: tracing.otlp.endpoint: expected an http://"),
        (
            {"otlp": {"endpoint": "http://u:p@c:4318/v1/traces"}},
            "gw.yaml: tracing.otlp.endpoint: expected a URL without credentials",
        ),
        ({"otlp": {"endpoint": ENDPOINT, "sample": 0}}, "gw.yaml: tracing.otlp.sample: expected a fraction"),
        ({"otlp": {"endpoint": ENDPOINT, "batch": 0}}, "gw.yaml: tracing.otlp.batch: expected an integer"),
        (
            {"otlp": {"endpoint": ENDPOINT, "batch": 100, "queue": 10}},
            "gw.yaml: tracing.otlp.queue: expected at least batch (100), found 10",
        ),
        (
            {"otlp": {"endpoint": ENDPOINT, "flush_interval": "soon"}},
            "gw.yaml: tracing.otlp.flush_interval: expected a duration",
        ),
        (
            {"otlp": {"endpoint": ENDPOINT, "timeout": 0}},
            "gw.yaml: tracing.otlp.timeout: expected a duration",
        ),
        (
            {"otlp": {"endpoint": ENDPOINT, "headers": {"bad name": "x"}}},
            "gw.yaml: tracing.otlp.headers.bad name: expected a header name",
        ),
        (
            {"otlp": {"endpoint": ENDPOINT, "headers": {"Content-Type": "text/plain"}}},
            "gw.yaml: tracing.otlp.headers.Content-Type: Content-Type is set by the exporter",
        ),
        (
            {"otlp": {"endpoint": ENDPOINT, "headers": {"x-key": "a\r\nb"}}},
            "gw.yaml: tracing.otlp.headers.x-key: expected a header value without CR, LF or NUL",
        ),
        (
            {"otlp": {"endpoint": ENDPOINT, "protocol": "grpc"}},
            "gw.yaml: tracing.otlp: unknown key 'protocol'",
        ),
        ({"jaeger": {}}, "gw.yaml: tracing: unknown key 'jaeger'; expected one of: otlp"),
        ("on", "gw.yaml: tracing: expected a mapping, found 'on'"),
    ],
)
def test_config_errors_name_the_key_path(tracing: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**_DOC, "tracing": tracing}, "gw.yaml")
    assert str(raised.value).startswith(message)


def test_config_defaults_and_values() -> None:
    assert parse_config(_DOC, "gw.yaml").tracing is None  # off unless configured
    otlp = _otlp()
    assert (otlp.endpoint, otlp.service_name, otlp.sample, otlp.batch, otlp.queue) == (
        ENDPOINT,
        "fastgw",
        1.0,
        512,
        8192,
    )
    assert (otlp.flush_interval, otlp.timeout, otlp.headers) == (1.0, 2.0, ())
    otlp = _otlp(endpoint="https://otel.example:4318", flush_interval="250ms", headers={"x-key": 7})
    assert otlp.endpoint == "https://otel.example:4318/v1/traces"  # no path: the traces path
    assert (otlp.flush_interval, otlp.headers) == (0.25, (("x-key", "7"),))
    assert _otlp(endpoint="http://c:4318/custom").endpoint == "http://c:4318/custom"  # as given


def test_sample_ratio_bounds_the_lower_half_of_new_trace_ids() -> None:
    assert sample_max(1.0) == 2**64 - 1
    assert sample_max(0.5) == 2**63 - 1
    assert sample_max(0.25) == 2**62 - 1


def _exchange(
    flags: str = "01", client: bool = False, tls: tuple[str, str] | None = None, **fields: Any
) -> SimpleNamespace:
    route = SimpleNamespace(
        id="items", config=SimpleNamespace(path="/items/{id}"), upstream=SimpleNamespace(name="up")
    )
    values: dict[str, Any] = {
        "traceparent": f"00-{TRACE}-b7ad6b7169203331-{flags}".encode(),
        "client_traceparent": f"00-{TRACE}-00f067aa0ba902b7-01".encode() if client else None,
        "received_at": 100.0,
        "method": b"GET",
        "path": b"/items/7",
        "host": b"shop.example",
        "route": route,
        "target": SimpleNamespace(label="10.0.0.5:8080"),
        "client_ip": "192.0.2.1",
        "upstream_error": None,
        "request_id": b"abc-1",
        "listener": SimpleNamespace(name="main"),
        "client": SimpleNamespace(protocol="1.1", tls_version=tls and tls[0], tls_cipher=tls and tls[1]),
    }
    return SimpleNamespace(**{**values, **fields})


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def test_records_only_sampled_traces_and_drops_beyond_the_queue_counting_them() -> None:
    export = SpanExport(_otlp(batch=2, queue=3))
    before = export.dropped_full.value
    export.record(_exchange(flags="00"), 200, 100.5)  # not sampled
    export.record(_exchange(traceparent=None), 200, 100.5)  # the listener does not trace
    assert export.queue == []
    for _ in range(5):
        export.record(_exchange(), 200, 100.5)
    assert len(export.queue) == 3 and export.dropped_full.value - before == 2
    assert export.wake.is_set()  # a full batch wakes the sender at once


def test_a_retired_exporter_hands_its_queue_and_late_records_on() -> None:
    old, new = SpanExport(_otlp(batch=1, queue=2)), SpanExport(_otlp(service_name="next"))
    old.record(_exchange(), 200, 100.5)
    old.retire(new)
    old.record(_exchange(), 200, 100.6)
    assert (len(old.queue), len(new.queue)) == (0, 2) and old.stopping
    assert span_export_for(None, new) is None
    assert span_export_for(new.config, new) is new
    assert span_export_for(_otlp(), new) is not new


def test_encodes_otlp_json_server_spans() -> None:
    export = SpanExport(_otlp(service_name="edge"))
    records = []
    for exchange, status in (
        (_exchange(client=True), 200),
        (_exchange(method=b"PURGE", route=None, target=None), 404),
        (_exchange(upstream_error=ConnectFault("connection refused")), 502),
        (_exchange(), 503),
        (_exchange(client=True, tls=("TLSv1.3", "TLS_AES_128_GCM_SHA256")), 200),
    ):
        export.record(exchange, status, 100.25)
        records.append(export.queue[-1])
    request = export.encode(records, wall_offset_ns=1_700_000_000 * 10**9)
    [resource_spans] = request["resourceSpans"]  # type: ignore[index]
    assert _attrs(resource_spans["resource"])["service.name"] == "edge"
    [scope_spans] = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == "fastgw"
    ok, other, refused, failed, secure = scope_spans["spans"]
    tls_attributes = {k: v for k, v in _attrs(secure).items() if k.startswith(("tls.", "url.scheme"))}
    assert tls_attributes == {
        "url.scheme": "https",
        "tls.protocol.name": "tls",
        "tls.protocol.version": "1.3",
        "tls.cipher": "TLS_AES_128_GCM_SHA256",
    }

    assert ok["traceId"] == TRACE and ok["spanId"] == "b7ad6b7169203331"
    assert ok["parentSpanId"] == "00f067aa0ba902b7" and ok["kind"] == 2 and ok["name"] == "GET items"
    assert ok["startTimeUnixNano"] == str(1_700_000_100 * 10**9)
    assert ok["endTimeUnixNano"] == str(1_700_000_100 * 10**9 + 250_000_000)
    assert _attrs(ok) == {
        "http.request.method": "GET",
        "url.path": "/items/7",
        "url.scheme": "http",
        "client.address": "192.0.2.1",
        "fastgw.request_id": "abc-1",
        "fastgw.listener": "main",
        "network.protocol.name": "http",
        "network.protocol.version": "1.1",
        "server.address": "shop.example",
        "http.response.status_code": "200",  # int64 in the protobuf JSON mapping: a string
        "http.route": "/items/{id}",
        "fastgw.route": "items",
        "fastgw.upstream": "up",
        "fastgw.upstream.target": "10.0.0.5:8080",
    }
    assert "status" not in ok

    assert (
        "parentSpanId" not in other and other["name"] == "_OTHER" and "status" not in other
    )  # 4xx: no error
    assert _attrs(other)["http.request.method_original"] == "PURGE"
    assert "http.route" not in _attrs(other) and "fastgw.upstream.target" not in _attrs(other)

    assert refused["status"] == {"code": 2, "message": "connection refused"}
    assert _attrs(refused)["error.type"] == "ConnectFault"
    assert failed["status"] == {"code": 2} and _attrs(failed)["error.type"] == "503"
