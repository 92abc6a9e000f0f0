"""
netapi module ``pigeon_webhook``: Pigeon's front for CI webhooks, started by
salt-api beside rest_cherrypy (found through the master's ``netapi_dirs``,
configured by its ``pigeon_webhook:`` key; see bootstrap/salt-master.conf).

salt-api's own ``/hook`` parses a body by its Content-Type (JSON, YAML, form)
before anything of Pigeon's sees it, so an unauthenticated sender could make
it expand a YAML alias bomb. This front takes the least it can: TLS, ``POST
/hook/pigeon/deploy`` only, ``Content-Type: application/json`` only, a
``Content-Length`` of at most 64 KiB read within a few seconds, UTF-8. It
parses nothing: it fires the raw body and the signature header as the event
``pigeon/webhook/deploy``, whose reaction (``reactor/deploy.sls`` ->
``deploy.ci_event``) checks the signature, the timestamp, the nonce and the
request. It answers 202 when the event is on the bus, and a one-line JSON
error (400, 404, 405, 411, 413, 415) otherwise.

Master config::

    netapi_dirs: [/opt/pigeon/srv/netapi]
    pigeon_webhook: {host: 0.0.0.0, port: 8001, ssl_crt: ..., ssl_key: ...}
"""

import http.server
import json
import logging
import re
import socketserver
import ssl
import time

log = logging.getLogger(__name__)

__virtualname__ = "pigeon_webhook"
PATH = "/hook/pigeon/deploy"
TAG = "pigeon/webhook/deploy"
MAX_BODY = 65536
DRAIN = 1 << 20  # bytes of a refused, too large body read before answering
READ_TIMEOUT = 5  # seconds for the headers and the body
SIGNATURE_HEADER = "X-Pigeon-Signature"


def __virtual__():
    conf = __opts__.get(__virtualname__) or {}
    if isinstance(conf, dict) and conf.get("port"):
        return __virtualname__
    return (False, "pigeon_webhook: no pigeon_webhook:port in the master config")


def check_request(method, path, headers):
    """(status, reason) refusing a request before its body is read, or None. Pure."""
    if path.split("?", 1)[0] != PATH:
        return 404, f"only {PATH} is served here"
    if method != "POST":
        return 405, "POST only"
    kind = str(headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if kind != "application/json":
        return 415, "Content-Type must be application/json"
    length = headers.get("Content-Length")
    if length is None:
        return 411, "Content-Length is required"
    if not re.fullmatch(r"[0-9]+", str(length)):  # ASCII digits only (not '²')
        return 400, "Content-Length is not a number"
    if len(str(length)) > 12 or int(length) > MAX_BODY:
        return 413, f"the body is larger than {MAX_BODY} bytes"
    return None


def event_data(body, headers):
    """The event fired for an accepted request: the raw body and the headers that count."""
    return {"body": body, "headers": {
        SIGNATURE_HEADER: headers.get(SIGNATURE_HEADER),
        "Content-Type": headers.get("Content-Type"),
    }}


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pigeon-webhook"
    sys_version = ""
    timeout = READ_TIMEOUT
    fire = None  # set by start(): fire(data, tag)

    def setup(self):
        # the TLS handshake here, in the request's thread and within the timeout, so that a
        # slow or silent client never holds up accepting the next one
        self.request.settimeout(READ_TIMEOUT)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def _answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        refused = check_request(self.command, self.path, self.headers)
        if refused:
            if refused[0] == 413:
                # read (and drop) some of what the client sends, so that it gets the answer
                # instead of a reset; never more than DRAIN bytes
                self._read(min(int(self.headers["Content-Length"]), DRAIN), timeout=1)
            self._answer(refused[0], {"success": False, "error": refused[1]})
            return
        raw = self._read(int(self.headers["Content-Length"]))
        if raw is None:
            self._answer(408, {"success": False, "error": f"the body did not arrive within {READ_TIMEOUT} s"})
            return
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._answer(400, {"success": False, "error": "the body is not UTF-8"})
            return
        type(self).fire(event_data(body, self.headers), TAG)
        self._answer(202, {"success": True})

    def _read(self, length, timeout=None):
        """The body, or None when it does not arrive whole within ``timeout`` (READ_TIMEOUT) in all."""
        deadline = time.monotonic() + (READ_TIMEOUT if timeout is None else timeout)
        chunks, left = [], length
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.connection.settimeout(remaining)
            try:
                chunk = self.rfile.read1(min(left, 16384))
            except (OSError, ValueError):
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        log.info("pigeon_webhook: %s %s", self.address_string(), format % args)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        log.info("pigeon_webhook: a request from %s failed", client_address[0])


def start():
    """Serve the webhook front until salt-api stops (called by salt-api)."""
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    conf = __opts__[__virtualname__]
    bus = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False)

    def fire(data, tag):
        bus.fire_event(data, tag)

    Handler.fire = staticmethod(fire)
    server = Server((conf.get("host", "127.0.0.1"), int(conf["port"])), Handler)
    if not conf.get("disable_ssl"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(conf["ssl_crt"], conf["ssl_key"])
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
    log.info("pigeon_webhook: serving %s on %s:%s", PATH, conf.get("host"), conf["port"])
    server.serve_forever()
