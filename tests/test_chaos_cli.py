"""``python -m fault_injection serve`` in a subprocess: base URL first, clean stop on signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHAT = {
    "model": "chaos",
    "messages": [{"role": "user", "content": "{'agent_unique_id': 2}"}],
}


@contextmanager
def serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fault_injection", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # a broken server must not hang the suite
    watchdog.start()
    try:
        first = proc.stdout.readline().strip()
        yield proc, first
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_its_url_first_serves_and_stops_cleanly(sig, tmp_path) -> None:
    log = tmp_path / "faults.jsonl"
    with serve("--scenario", "flaky", "--seed", "3", "--log", str(log)) as (proc, url):
        assert url.startswith("http://127.0.0.1:"), url
        assert get(url + "/v1/models")["data"][0]["id"] == "chaos"
        status, _ = post(url + "/v1/chat/completions", CHAT)
        assert status in (200, 400, 408, 429, 500, 503)
        health = get(url + "/_chaos/health?wait_idle=5")
        assert (health["scenario"], health["seed"], health["requests"]) == ("flaky", 3, 1)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        rest = proc.stdout.read()
    assert "scenario 'flaky', seed 3" in err and "stopped after 1 requests" in err
    assert rest == ""  # stdout: the URL line only
    [line] = log.read_text().splitlines()
    assert json.loads(line)["agent"] == 2


def test_serve_on_a_busy_port_fails_with_status_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        with serve("--port", port) as (proc, first):
            assert first == ""
            assert proc.wait(timeout=30) == 2
            assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr.read()


def test_serve_rejects_an_unknown_scenario() -> None:
    with serve("--scenario", "nope") as (proc, _):
        assert proc.wait(timeout=30) == 2
        assert "invalid choice: 'nope'" in proc.stderr.read()
