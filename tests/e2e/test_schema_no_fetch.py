"""A pipeline's output schema never makes chainfleet fetch a URL (no request forgery from a
pipeline file): a local HTTP server, listening, sees no request."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chainfleet import ConfigError, Pipeline, PipelineError
from chainfleet.pipeline.contracts import Contract


class Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Recorder.requests.append(self.path)
        body = b'{"type": "object"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A schema server on 127.0.0.1: its base URL; ``Recorder.requests`` is what it was asked."""
    Recorder.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_schema_ref_to_a_local_server_is_refused_at_load_and_never_fetched(server: str) -> None:
    schema = {"type": "object", "properties": {"x": {"$ref": f"{server}/s.json"}}}
    with pytest.raises(PipelineError, match="is not allowed"):
        Pipeline.from_dict({"input": "topic", "stages": [{"name": "a", "prompt": "x", "output": schema}]})
    assert Recorder.requests == []


def test_the_validator_itself_retrieves_nothing(server: str) -> None:
    # a Contract built by hand skips the load checks: the registry still fetches nothing
    contract = Contract({"$ref": f"{server}/s.json"})
    with pytest.raises(ConfigError, match="refers only to its own parts"):
        contract.problem({"x": 1})
    assert Recorder.requests == []
