"""[telemetry]: traces and metrics over OTLP/HTTP, received by a real receiver (tests/otlp_receiver.py)
from a real ``fastroute serve`` talking to the stub upstream, called by the official SDKs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ROOT, FastrouteProcess, free_port, start_router
from tests.otlp_receiver import OTLPReceiver
from tests.stub_upstream import StubUpstream

SERVER, CLIENT = 2, 3  # the span kinds of the OTLP protobuf
OK, ERROR = 0, 2  # its status codes (unset, error)
#: the exporters' standard knobs, so the spans and counts arrive while the test waits
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "300"}

FAILOVER = """
[[routers]]
type = "prefix"
model_prefix = "fo-"
provider = "dead"
fallbacks = ["stub"]
"""


def telemetry(endpoint: str) -> str:
    return f'\n[telemetry]\nenabled = true\notlp_endpoint = "{endpoint}"\nservice_name = "fastroute-test"\n'


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    made = OTLPReceiver().start()
    yield made
    made.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, stub: StubUpstream,
           receiver: OTLPReceiver) -> Iterator[FastrouteProcess]:
    proc = start_router(tmp_path_factory.mktemp("otel"), stub, extra=FAILOVER + telemetry(receiver.endpoint),
                        env=FAST_EXPORT)
    yield proc
    proc.stop()


def spans_of(receiver: OTLPReceiver, request_id: str, count: int) -> list[dict[str, Any]]:
    """The request's spans: its server span (``fastroute.request_id``) and every span of its trace
    under it, once ``count`` of them arrived."""

    def found() -> list[dict[str, Any]]:
        roots = [s for s in receiver.spans if s["attributes"].get("fastroute.request_id") == request_id]
        if not roots:
            return []
        return [s for s in receiver.spans if s["trace_id"] == roots[0]["trace_id"]]

    assert receiver.wait_for(lambda: len(found()) >= count), f"spans of {request_id}: {found()}"
    return found()


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    named = [s for s in spans if s["name"] == name]
    assert len(named) == 1, (name, spans)
    return named[0]


def upstream_traceparent(stub: StubUpstream, marker: str) -> tuple[str, str, bool]:
    """The trace id, parent span id and sampled flag of the traceparent the stub received with the
    request whose body holds ``marker``."""
    sent = [r for r in stub.requests if marker in str(r.body)]
    assert sent, marker
    version, trace_id, span_id, flags = sent[-1].headers["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)


def test_a_request_is_a_span_tree_with_gen_ai_attributes(traced: FastrouteProcess, receiver: OTLPReceiver,
                                                         stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=f"{traced.url}/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="alias", messages=[{"role": "user", "content": "tree-1"}])
    answer = raw.parse()
    spans = spans_of(receiver, raw.headers["x-request-id"], 3)
    server, send, http = one(spans, "dispatch"), one(spans, "provider.send"), one(spans, "provider.http")
    assert server["kind"] == SERVER and server["parent"] == "" and server["status"] == OK
    assert send["parent"] == server["span_id"] and http["parent"] == send["span_id"] and http["kind"] == CLIENT
    a = server["attributes"]
    assert a["gen_ai.request.model"] == "alias"  # what the client asked for
    assert a["gen_ai.response.model"] == "stub-rewritten"  # what answered it (the rule rewrote it)
    assert a["gen_ai.provider.name"] == "openai" and a["fastroute.provider"] == "stub"
    assert a["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert "gen_ai.usage.cache_read.input_tokens" in a
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert isinstance(a["fastroute.rule"], int) and a["http.response.status_code"] == 200
    assert http["attributes"]["gen_ai.request.model"] == "stub-rewritten"
    assert http["attributes"]["fastroute.provider"] == "stub"
    assert {"service.name": "fastroute-test"}.items() <= receiver.resources[-1].items()
    # the upstream request carried the provider.http span's context
    assert upstream_traceparent(stub, "tree-1") == (http["trace_id"], http["span_id"], True)
    # and no secret went into any attribute
    assert not any("sk-provider-secret" in str(s["attributes"]) for s in receiver.spans)


def test_a_stream_has_a_body_span_and_carries_the_trace_upstream(traced: FastrouteProcess, receiver: OTLPReceiver,
                                                                 stub: StubUpstream) -> None:
    client = anthropic.Anthropic(base_url=traced.url, api_key="unused")
    with client.messages.with_streaming_response.create(
            model="a/claude-stub", max_tokens=64, stream=True,
            messages=[{"role": "user", "content": "stream-1"}]) as response:
        request_id = response.headers["x-request-id"]
        text = "".join(line for line in response.iter_lines())
    assert "stream-1" in text and "message_stop" in text
    spans = spans_of(receiver, request_id, 4)
    server, body = one(spans, "dispatch_stream"), one(spans, "dispatch_stream.body")
    send, http = one(spans, "provider.send"), one(spans, "provider.http")
    assert body["parent"] == server["span_id"] and send["parent"] == server["span_id"]
    assert http["parent"] == send["span_id"]
    assert server["start"] <= body["start"] and body["end"] <= server["end"]  # the exchange covers its body
    assert server["attributes"]["fastroute.stream"] is True and server["status"] == OK
    assert server["attributes"]["gen_ai.provider.name"] == "anthropic"
    assert server["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert upstream_traceparent(stub, "stream-1") == (server["trace_id"], http["span_id"], True)


def test_failover_is_two_attempts_under_one_send(traced: FastrouteProcess, receiver: OTLPReceiver) -> None:
    client = openai.OpenAI(base_url=f"{traced.url}/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="fo-model", messages=[{"role": "user", "content": "failover-1"}])
    assert raw.headers["x-router-attempts"] == "2"
    spans = spans_of(receiver, raw.headers["x-request-id"], 4)
    server, send = one(spans, "dispatch"), one(spans, "provider.send")
    attempts = sorted((s for s in spans if s["name"] == "provider.http"), key=lambda s: s["start"])
    assert [s["attributes"]["fastroute.provider"] for s in attempts] == ["dead", "stub"]
    assert all(s["parent"] == send["span_id"] for s in attempts)
    first, second = attempts
    assert first["status"] == ERROR and first["attributes"]["error.type"].startswith("Upstream")
    assert first["attributes"]["fastroute.status"] == 502 and "dead" in first["message"]
    assert second["status"] == OK and "error.type" not in second["attributes"]
    assert send["status"] == OK and send["attributes"]["fastroute.attempts"] == 2
    assert server["status"] == OK and server["attributes"]["fastroute.provider"] == "stub"
    assert server["attributes"]["fastroute.attempts"] == 2


def test_an_upstream_error_is_an_error_span(traced: FastrouteProcess, receiver: OTLPReceiver) -> None:
    response = httpx.post(f"{traced.url}/v1/chat/completions", timeout=30,
                          json={"model": "stub-error-500", "messages": [{"role": "user", "content": "err-1"}]})
    assert response.status_code == 502
    spans = spans_of(receiver, response.headers["x-request-id"], 3)
    server, send, http = one(spans, "dispatch"), one(spans, "provider.send"), one(spans, "provider.http")
    assert server["status"] == ERROR and server["attributes"]["error.type"] == "upstream_error"
    assert server["attributes"]["http.response.status_code"] == 502
    assert "exploded" in server["message"]
    assert http["status"] == ERROR and http["attributes"]["error.type"] == "UpstreamError"
    assert send["status"] == ERROR


def test_a_refused_request_still_has_its_span(traced: FastrouteProcess, receiver: OTLPReceiver) -> None:
    response = httpx.post(f"{traced.url}/v1/chat/completions", content=b"{not json", timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    server = one(spans_of(receiver, response.headers["x-request-id"], 1), "dispatch")
    assert server["status"] == ERROR and server["attributes"]["error.type"] == "invalid_request"


def test_the_clients_traceparent_is_continued_and_passed_on(traced: FastrouteProcess, receiver: OTLPReceiver,
                                                            stub: StubUpstream) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = httpx.post(f"{traced.url}/v1/chat/completions", timeout=30,
                          headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
                          json={"model": "stub-model", "messages": [{"role": "user", "content": "parent-1"}]})
    assert response.status_code == 200
    spans = spans_of(receiver, response.headers["x-request-id"], 3)
    server, http = one(spans, "dispatch"), one(spans, "provider.http")
    assert server["trace_id"] == trace_id and server["parent"] == parent_id
    assert upstream_traceparent(stub, "parent-1") == (trace_id, http["span_id"], True)


def test_an_unsampled_client_trace_is_not_exported_but_still_passed_on(
        traced: FastrouteProcess, receiver: OTLPReceiver, stub: StubUpstream) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    response = httpx.post(f"{traced.url}/v1/chat/completions", timeout=30,
                          headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-00"},
                          json={"model": "stub-model", "messages": [{"role": "user", "content": "unsampled-1"}]})
    assert response.status_code == 200
    sent_trace, _, sampled = upstream_traceparent(stub, "unsampled-1")
    assert sent_trace == trace_id and not sampled
    # a later, sampled request's spans arrive: by then the unsampled one's would have too
    later = httpx.post(f"{traced.url}/v1/chat/completions", timeout=30,
                       json={"model": "stub-model", "messages": [{"role": "user", "content": "sampled-1"}]})
    spans_of(receiver, later.headers["x-request-id"], 3)
    assert not [s for s in receiver.spans if s["trace_id"] == trace_id]


def test_metrics_arrive_with_the_seeds_names(traced: FastrouteProcess, receiver: OTLPReceiver) -> None:
    client = openai.OpenAI(base_url=f"{traced.url}/v1", api_key="unused")
    for _ in range(3):
        client.chat.completions.create(model="stub-model", messages=[{"role": "user", "content": "metrics-1"}])
    httpx.post(f"{traced.url}/v1/chat/completions", timeout=30,
               json={"model": "stub-error-500", "messages": [{"role": "user", "content": "metrics-2"}]})

    def latest(name: str, **attributes: Any) -> Any:
        points = [v for n, a, v in receiver.metrics if n == name and attributes.items() <= a.items()]
        return points[-1] if points else None

    ok = {"provider": "stub", "model": "stub-model", "error": False}
    assert receiver.wait_for(lambda: (latest("router.requests", **ok) or 0) >= 3
                             and latest("router.requests", provider="stub", error=True))
    assert latest("router.request.duration_ms", **ok) >= 3  # a histogram: its count
    assert latest("router.tokens.input", **ok) > 0 and latest("router.tokens.output", **ok) > 0
    assert latest("router.tokens.input", error=True) is None  # no tokens counted for an error
    # a model name the routing table does not know is no attribute value (as on /metrics)
    assert latest("router.requests", provider="stub", error=True)
    assert not [a for n, a, _ in receiver.metrics if a.get("model") == "stub-error-500"]


def test_a_receiver_that_is_down_costs_the_requests_nothing(tmp_path: Path, stub: StubUpstream) -> None:
    proc = start_router(tmp_path, stub, extra=telemetry(f"http://127.0.0.1:{free_port()}"), env=FAST_EXPORT)
    try:
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0)
        for i in range(20):
            answer = client.chat.completions.create(model="stub-model",
                                                    messages=[{"role": "user", "content": f"down-{i}"}])
            assert answer.choices[0].message.content == f"stub: down-{i}"
        assert stub.wait_for(lambda: "did not take" in proc.output, timeout=30), proc.output
    finally:
        assert proc.stop() == 0
    assert proc.output.count("telemetry: the OTLP receiver at") == 1, proc.output
    assert "Traceback" not in proc.output and "Failed to export" not in proc.output


def test_a_clean_stop_exports_what_was_left(tmp_path: Path, stub: StubUpstream) -> None:
    """Default export intervals (5 s for spans, 60 s for metrics): only the stop sends them."""
    receiver = OTLPReceiver().start()
    try:
        proc = start_router(tmp_path, stub, extra=telemetry(receiver.endpoint))
        try:
            response = httpx.post(f"{proc.url}/v1/chat/completions", timeout=30,
                                  json={"model": "stub-model", "messages": [{"role": "user", "content": "stop-1"}]})
        finally:
            assert proc.stop() == 0
        assert one(spans_of(receiver, response.headers["x-request-id"], 3), "dispatch")["status"] == OK
        assert any(n == "router.requests" for n, _, _ in receiver.metrics)
    finally:
        receiver.stop()


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)


def test_off_imports_nothing_of_opentelemetry() -> None:
    done = _python("""
        import sys
        from fastroute.config import config_from_dict
        from fastroute.server.runner import _app_builder
        app = _app_builder()(config_from_dict({"providers": [{"name": "e", "format": "echo"}]}))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print("loaded:", loaded)
        assert not loaded, loaded
    """)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded: []" in done.stdout


def test_on_without_the_packages_is_a_clear_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "fastroute.toml"
    config.write_text('[[providers]]\nname = "e"\nformat = "echo"\n' + telemetry("http://127.0.0.1:4318"))
    done = _python(f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        from fastroute.cli import main
        sys.exit(main(["check", {str(config)!r}]))
    """)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "telemetry.enabled" in done.stderr and "pip install 'fastroute[otel]'" in done.stderr
