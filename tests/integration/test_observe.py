"""
What an operator watches, on the lab: HAProxy's Prometheus endpoint and stats page (internal
networks only, each slot's counters under its backend's name), and the notification reactor
(every action's outcome posted to the chat webhook of the master's pillar, here a receiver
this test runs).
"""

import http.server
import json
import socket
import subprocess
import threading
import time

import pytest

from conftest import APP, LAB, app_status

TEST_PILLAR = LAB / "pillar" / "test_stacks.sls"


def office(url):
    """(HTTP status, body) of a GET from a client on the lab's office network (internal_networks)."""
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "pigeon-office", "pigeon/base:bookworm", "curl", "-s",
         "--max-time", "5", "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=60)
    body, _, status = proc.stdout.rpartition("\n")
    return int(status or 0), body


def test_the_metrics_answer_the_internal_network_only_with_each_slots_counters(stacks):
    slot = next(iter(app_status(stacks)["stacks"].values()), {}).get("slot", "a")
    status, body = office("http://pigeon-haproxy:8405/metrics")
    assert status == 200
    assert f'haproxy_backend_http_responses_total{{proxy="{APP}_{slot}",code="2xx"}}' in body
    assert f'haproxy_server_status{{proxy="{APP}_{slot}",server="s1"' in body
    assert office("http://pigeon-haproxy:8405/stats")[0] == 200
    # from elsewhere (this host, through docker's published port): refused
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8405/metrics"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "403"


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        Receiver.got.append((self.path, self.headers.get("Content-Type"), json.loads(self.rfile.read(length))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = http.server.HTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.got = []
    TEST_PILLAR.write_text(f"pigeon_notify:\n  url: http://127.0.0.1:{port}/hooks/pigeon\n")
    try:
        yield Receiver.got
    finally:
        TEST_PILLAR.unlink()
        server.shutdown()


def posted(receiver, count, timeout=30):
    """The chat lines the receiver got, once there are ``count`` (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(len(body["entries"]) for _, _, body in receiver) < count:
        time.sleep(0.2)
    return [line for _, _, body in receiver for line in body["text"].splitlines()]


def test_each_outcome_is_posted_to_the_chat_webhook_of_the_pillar(stacks, receiver):
    # a first action: what was posted before this test no longer matters
    assert stacks("maintenance", "off", "--app-name", APP).rc == 0
    assert len(posted(receiver, 1)) >= 1
    receiver.clear()
    assert stacks("maintenance", "on", "--app-name", APP, "--message", "notify test").rc == 0
    assert stacks("maintenance", "off", "--app-name", APP).rc == 0
    lines = posted(receiver, 2)
    assert len(lines) == 2, receiver
    assert all(path == "/hooks/pigeon" and kind == "application/json" for path, kind, _ in receiver)
    assert "app: maintenance success by" in lines[0] and "app is in maintenance" in lines[0]
    assert "app: maintenance off" in lines[1]
    # a forged event (any minion may fire one): nothing new in the history, nothing posted
    forged = subprocess.run([str(LAB / "venv/bin/salt"), "-c", str(LAB / "etc/salt"), "lab-minion", "event.send",
                             f"pigeon/deploy/{APP}/activate", '{"text": "forged: all is lost"}'],
                            capture_output=True, text=True, timeout=60)
    assert forged.returncode == 0, forged.stderr
    time.sleep(3)
    assert len([line for _, _, body in receiver for line in body["text"].splitlines()]) == 2
    assert not any("forged" in body["text"] for _, _, body in receiver)
