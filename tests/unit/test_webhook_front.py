"""
Unit tests for srv/netapi/pigeon_webhook.py (the front for CI webhooks): the
pure request check, then the real HTTP server on 127.0.0.1 (no TLS), its
``fire`` replaced by a function that records what would reach the bus.
"""

import email.message
import http.client
import importlib.util
import json
import pathlib
import socket
import threading
import time

import pytest

PATH = pathlib.Path(__file__).resolve().parents[2] / "srv" / "netapi" / "pigeon_webhook.py"
_spec = importlib.util.spec_from_file_location("pigeon_webhook_under_test", PATH)
front = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(front)

JSON = "application/json"
BODY = json.dumps({"app": "app", "version": "1.4", "action": "release",
                   "timestamp": 1764662400, "nonce": "5f0c2a9e41d8b7c3a6e1"})
SIGNATURE = "sha256=" + "ab" * 32


def headers(**given):
    values = {"Content-Type": JSON, "Content-Length": "10"}
    values.update({k.replace("_", "-"): v for k, v in given.items()})
    return {k: v for k, v in values.items() if v is not None}


# ---------------------------------------------------------------------------
# check_request
def test_a_good_request_passes():
    assert front.check_request("POST", front.PATH, headers()) is None
    assert front.check_request("POST", front.PATH + "?x=1", headers()) is None
    assert front.check_request("POST", front.PATH, headers(Content_Type="application/json; charset=utf-8")) is None
    assert front.check_request("POST", front.PATH, headers(Content_Type="Application/JSON")) is None
    assert front.check_request("POST", front.PATH, headers(Content_Length="0")) is None
    assert front.check_request("POST", front.PATH, headers(Content_Length=str(front.MAX_BODY))) is None


@pytest.mark.parametrize("path", ["/", "/hook", "/hook/pigeon", "/hook/pigeon/deploy/", "/hook/pigeon/deployx",
                                  "/HOOK/pigeon/deploy", "//hook/pigeon/deploy", "/hook/pigeon/../pigeon/deploy",
                                  "/run", "/login", "hook/pigeon/deploy", ""])
def test_other_paths_are_404(path):
    assert front.check_request("POST", path, headers())[0] == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post"])
def test_other_methods_are_405(method):
    assert front.check_request(method, front.PATH, headers()) == (405, "POST only")


def test_the_path_is_checked_before_the_method():
    assert front.check_request("GET", "/", headers())[0] == 404


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "text/plain", "application/json-patch+json", "", None])
def test_other_content_types_are_415(content_type):
    assert front.check_request("POST", front.PATH, headers(Content_Type=content_type))[0] == 415


def test_no_content_length_is_411():
    assert front.check_request("POST", front.PATH, headers(Content_Length=None)) == (411, "Content-Length is required")


@pytest.mark.parametrize("length", ["", "ten", "-1", "1.5", " 10", "10 ", "0x10", "1e3", "+10", "10, 10"])
def test_a_content_length_that_is_not_a_number_is_400(length):
    assert front.check_request("POST", front.PATH, headers(Content_Length=length)) == (400, "Content-Length is not a number")


@pytest.mark.parametrize("length", ["\xb2", "1\xb9", "\xb3" * 3])
def test_a_content_length_of_superscript_digits_is_400(length):
    # BUG (pigeon_webhook.check_request): http.server decodes headers as ISO-8859-1, where
    # "\xb2" is "²"; "²".isdigit() is True but int("²") raises ValueError, so check_request
    # raises instead of answering 400 (the handler then closes the connection with no answer).
    assert front.check_request("POST", front.PATH, headers(Content_Length=length)) == (400, "Content-Length is not a number")


def test_a_content_length_of_5000_digits_is_refused():
    # BUG (pigeon_webhook.check_request): int() of a string of more than 4300 digits raises
    # ValueError (Python's int_max_str_digits), so check_request raises instead of 413 or 400.
    refused = front.check_request("POST", front.PATH, headers(Content_Length="9" * 5000))
    assert refused is not None and refused[0] in (400, 413)


@pytest.mark.parametrize("length", [str(front.MAX_BODY + 1), "70000", "9" * 30, "0" * 10 + "70000"])
def test_a_content_length_over_max_body_is_413(length):
    assert front.check_request("POST", front.PATH, headers(Content_Length=length))[0] == 413


def test_check_request_reads_headers_as_http_server_gives_them():
    message = email.message.Message()  # what BaseHTTPRequestHandler.headers is
    message["content-type"] = "application/json"
    message["content-length"] = "12"
    assert front.check_request("POST", front.PATH, message) is None
    del message["content-length"]
    assert front.check_request("POST", front.PATH, message)[0] == 411


def test_event_data_is_the_raw_body_and_the_headers_that_count():
    data = front.event_data(BODY, {"X-Pigeon-Signature": SIGNATURE, "Content-Type": JSON, "Cookie": "x"})
    assert data == {"body": BODY, "headers": {"X-Pigeon-Signature": SIGNATURE, "Content-Type": JSON}}


def test_virtual_needs_a_port():
    front.__opts__ = {"pigeon_webhook": {"port": 8001}}
    assert front.__virtual__() == "pigeon_webhook"
    for conf in (None, {}, {"host": "0.0.0.0"}, "8001"):
        front.__opts__ = {"pigeon_webhook": conf}
        assert front.__virtual__()[0] is False


# ---------------------------------------------------------------------------
# the HTTP server
@pytest.fixture
def server(monkeypatch):
    fired = []
    monkeypatch.setattr(front.Handler, "fire", staticmethod(lambda data, tag: fired.append((data, tag))))
    httpd = front.Server(("127.0.0.1", 0), front.Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.fired = fired
    httpd.port = httpd.server_address[1]
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)
    assert not thread.is_alive()


def post(server, body, content_type=JSON, signature=SIGNATURE, path=front.PATH, method="POST", **extra):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        sent = {"Content-Type": content_type, "X-Pigeon-Signature": signature, **extra}
        conn.request(method, path, body=body, headers={k: v for k, v in sent.items() if v is not None})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_good_request_is_fired_and_answered_202(server):
    status, answer = post(server, BODY)
    assert (status, answer) == (202, {"success": True})
    assert server.fired == [({"body": BODY, "headers": {"X-Pigeon-Signature": SIGNATURE, "Content-Type": JSON}},
                             "pigeon/webhook/deploy")]


def test_the_body_is_fired_as_sent_not_parsed(server):
    body = '{"app": "app", "app": "other", "x": NaN}  '  # what the reaction must judge, untouched
    assert post(server, body.encode())[0] == 202
    assert server.fired[0][0]["body"] == body


def test_an_unsigned_request_is_fired_for_the_reaction_to_reject(server):
    assert post(server, BODY, signature=None)[0] == 202
    assert server.fired[0][0]["headers"] == {"X-Pigeon-Signature": None, "Content-Type": JSON}


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-www-form-urlencoded", None])
def test_other_content_types_are_415_and_not_fired(server, content_type):
    status, answer = post(server, "app: app\n", content_type=content_type)
    assert status == 415 and answer["success"] is False and "application/json" in answer["error"]
    assert server.fired == []


def test_wrong_path_and_method_are_not_fired(server):
    assert post(server, BODY, path="/hook/other")[0] == 404
    assert post(server, None, method="GET")[0] == 405
    assert server.fired == []


def test_a_70_kb_body_is_413_and_not_fired(server):
    body = json.dumps({"app": "app", "pad": "x" * 70000})
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall((f"POST {front.PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        answer = sock.makefile("rb").readline()  # answered before the body is read
        assert answer.split()[1] == b"413"
        try:
            sock.sendall(body.encode())
        except OSError:
            pass  # the front closed the connection: nothing more is read
    assert server.fired == []


def test_a_70_kb_body_sent_at_once_is_413(server):
    status, answer = post(server, "x" * 70000)
    assert status == 413 and "larger than 65536" in answer["error"]
    assert server.fired == []


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"app": "\xe9"}', b"\xed\xa0\x80", b"\xc0\xaf"])
def test_a_body_that_is_not_utf8_is_400_and_not_fired(server, body):
    status, answer = post(server, body)
    assert (status, answer) == (400, {"success": False, "error": "the body is not UTF-8"})
    assert server.fired == []


def test_answers_are_one_line_json(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", front.PATH, body=BODY, headers={"Content-Type": "text/yaml"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    assert response.getheader("Content-Type") == "application/json"
    assert b"\n" not in raw and json.loads(raw)["success"] is False
    assert response.getheader("Server").startswith("pigeon-webhook")


def test_a_stalled_client_does_not_block_another(server):
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        # one sends its headers and never its body, one half its headers, one nothing at all
        stalled[0].sendall((f"POST {front.PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            "Content-Length: 100\r\n\r\n").encode())
        stalled[1].sendall(f"POST {front.PATH} HTTP/1.1\r\nContent-Ty".encode())
        time.sleep(0.2)
        started = time.monotonic()
        assert post(server, BODY)[0] == 202
        assert time.monotonic() - started < 2
        assert len(server.fired) == 1
    finally:
        for sock in stalled:
            sock.close()


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(front, "READ_TIMEOUT", 0.3)
    monkeypatch.setattr(front.Handler, "timeout", 0.3)
    return 0.3


def test_a_stalled_client_is_cut_off_and_not_fired(server, short_timeout):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall((f"POST {front.PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: 100\r\n\r\n{\"app\"").encode())
        started = time.monotonic()
        answer = sock.recv(1024)  # a 408 (or a closed connection), not left open
        assert answer == b"" or answer.startswith(b"HTTP/1.0 408"), answer
        elapsed = time.monotonic() - started
        assert short_timeout / 2 < elapsed < short_timeout + 2
    assert server.fired == []


def test_a_trickling_client_is_cut_off_within_the_read_timeout(server, short_timeout):
    # BUG (pigeon_webhook.Handler): READ_TIMEOUT is "seconds for the headers and the body"
    # (and the module says the body is "read within a few seconds"), but it is a socket timeout,
    # so it bounds each recv only: a client sending one byte every (READ_TIMEOUT - e) seconds
    # holds its thread for as long as it likes (64 KiB x 5 s: days), a slowloris on threads.
    body = BODY.encode()[:12]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall((f"POST {front.PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        started = time.monotonic()
        try:
            for byte in body:  # 12 bytes, one each 0.15 s: 1.8 s, six times the read timeout
                sock.sendall(bytes([byte]))
                time.sleep(short_timeout / 2)
            sock.recv(1024)
        except OSError:
            pass  # cut off: what is expected
        elapsed = time.monotonic() - started
    assert server.fired == [], f"a body trickled over {elapsed:.1f} s (read timeout {short_timeout} s) was taken"


def test_a_superscript_content_length_is_answered_400(server):
    # BUG (pigeon_webhook.check_request, as above), seen from the client: "Content-Length: \xb2"
    # (ISO-8859-1 "²") gets no answer at all, the connection is closed, instead of a 400.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"POST {front.PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
                     + b"Content-Length: \xb2\r\n\r\n{}")
        status_line = sock.makefile("rb").readline()
    assert server.fired == []
    assert status_line.split()[1:2] == [b"400"], status_line
