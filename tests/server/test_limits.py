"""A server with one slot, a queue of one, an API key and a small body limit: 401, 413 and
429 in OpenAI's shape, a disconnecting client freeing its slot at once, and a graceful stop
that lets a running stream finish."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from live_server import LiveServer, start

KEY = "test-key-0123456789"
LONG = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def small(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("small")
    keys = folder / "keys.txt"
    keys.write_text(f"# the test's key\n{KEY}\n")
    live = start(["-m", str(smollm2_path), "--alias", "smol", "-np", "1", "--max-queue", "1", "-c", "512",
                  "--api-key-file", str(keys), "--max-body-size", "4K", "--shutdown-timeout", "20"],
                 folder / "server.log", api_key=KEY)
    yield live
    live.stop()


def _error(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, object] = body["error"]
    return error


def test_api_key(small: LiveServer) -> None:
    r = httpx.post(small.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
    r = httpx.get(small.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(small.url + "/health").status_code == 200  # no key needed
    assert httpx.get(small.url + "/v1/models", headers={"X-Api-Key": KEY}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=small.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert small.openai().models.list().data[0].id == "smol"


def test_body_too_large(small: LiveServer) -> None:
    with small.http() as http:
        r = http.post("/v1/completions", json={"prompt": "word " * 2000, "max_tokens": 1})
        assert r.status_code == 413 and _error(r)["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"prompt": "'
            for _ in range(100):
                yield b"word " * 20
            yield b'", "max_tokens": 1}'

        r = http.post("/v1/completions", content=chunked(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and _error(r)["code"] == "request_too_large"


class Stream:
    """A streamed completion read in a thread until told to stop (or until it ends)."""

    def __init__(self, server: LiveServer, body: dict[str, object]) -> None:
        self.events: list[str] = []
        self.status = 0
        self.started = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(server, body), daemon=True)
        self.thread.start()

    def _run(self, server: LiveServer, body: dict[str, object]) -> None:
        with server.http() as http, http.stream("POST", "/v1/completions", json=body) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.events.append(line[6:])
                    self.started.set()
                if self.stop.is_set():
                    return  # closes the connection mid-stream
        self.started.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_disconnect_frees_the_slot_at_once(small: LiveServer) -> None:
    cancelled = small.metric("llamabind_cancelled_requests_total", model="smol")
    stream = Stream(small, LONG)
    assert stream.started.wait(60) and stream.status == 200
    assert small.metric("llamabind_active_slots", model="smol") == 1
    stream.close()
    t0 = time.monotonic()
    assert small.wait_metric("llamabind_active_slots", 0, timeout=5, model="smol") == 0
    freed_in = time.monotonic() - t0
    assert freed_in < 2, freed_in
    assert small.wait_metric("llamabind_cancelled_requests_total", cancelled + 1, model="smol") == cancelled + 1
    # Nothing is generated for nobody: the token count stops moving.
    tokens = small.metric("llamabind_completion_tokens_total", model="smol")
    time.sleep(0.5)
    assert small.metric("llamabind_completion_tokens_total", model="smol") == tokens
    assert "[DONE]" not in stream.events and len(stream.events) < 400
    out = small.openai().completions.create(model="smol", prompt="Hi", max_tokens=2, temperature=0)
    assert out.choices[0].text


def test_full_queue_is_429(small: LiveServer) -> None:
    running = Stream(small, LONG)
    assert running.started.wait(60)
    waiting = Stream(small, LONG)  # takes the one place in the queue
    assert small.wait_metric("llamabind_queue_depth", 1, model="smol") == 1
    try:
        with small.http() as http:
            r = http.post("/v1/completions", json={**LONG, "stream": False, "max_tokens": 1})
        assert r.status_code == 429 and _error(r)["code"] == "rate_limit_exceeded"
        assert int(r.headers["Retry-After"]) >= 1
        with pytest.raises(openai.RateLimitError):
            small.openai().chat.completions.create(model="smol", messages=[{"role": "user", "content": "x"}])
    finally:
        running.close()
        waiting.close()
    assert small.wait_metric("llamabind_queue_depth", 0, model="smol") == 0
    assert small.wait_metric("llamabind_active_slots", 0, model="smol") == 0
    assert small.metric("llamabind_requests_total", model="smol", endpoint="/v1/completions", status="429") >= 1


def test_sigterm_lets_a_running_stream_finish(small: LiveServer) -> None:
    """Last in this module: it stops the server."""
    stream = Stream(small, {**LONG, "max_tokens": 24})
    assert stream.started.wait(60)
    status = small.stop()
    stream.thread.join(30)
    assert status == 0, small.log()
    assert stream.events[-1] == "[DONE]", stream.events[-3:]
    text = "".join(json.loads(e)["choices"][0]["text"] for e in stream.events[:-1])
    assert text
