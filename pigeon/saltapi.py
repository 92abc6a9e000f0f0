"""
A client of salt-api's rest_cherrypy, as salt-pepper is one: ``/login`` with an
eauth backend, a token kept between runs, low-state runs of the runner and
runner_async clients, and the ``/events`` stream.

Every request goes through ``SaltApi.request``: the token, one new login when
salt-api refuses a cached token (401), and transport failures (TLS, refused,
timeouts) as one-line ``StacksError``s. Nothing here knows Pigeon's actions
beyond their runner's name (``deploy.<action>``) and the registry's lock
(``stacks.status``), asked when an action falls silent.

Used by ``pigeon.cli``; usable on its own:

    api = SaltApi("https://salt:8000", "deployer", password, "pam")
    api.runner("stacks.status", kwarg={"app": "app"})
"""

import hashlib
import json
import os
import queue
import random
import re
import socket
import threading
import time

import requests

from pigeon.errors import EXIT_API, EXIT_DEADLINE, EXIT_FAILED, EXIT_USAGE, StacksError


class TokenCache:
    """
    salt-api tokens kept between runs (as salt's own ~/.salt_token and pepper's cache do),
    in a file only its owner may read: one login per token lifetime instead of one per run.
    An entry is found by the URL, the user, the eauth backend and a key derived from the
    password, so that other credentials never reuse it; a token salt-api refuses is dropped
    and the client logs in again.
    """

    MARGIN = 60  # seconds: a token about to expire is not used

    def __init__(self, path):
        self.path = path

    @staticmethod
    def key(url, user, eauth, password):
        salt = f"{url}\0{user}\0{eauth}".encode()
        return hashlib.pbkdf2_hmac("sha256", str(password).encode(), salt, 10000).hex()

    def _read(self):
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, encoding="utf-8") as fh:
                data = json.load(fh)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write(self, data):
        tmp = f"{self.path}.{os.getpid()}.{random.randrange(10**9)}"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            # a new file of our own (never one that exists, never through a symlink), 0600
            # from its creation, then renamed over the cache
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass  # a cache: without it, every run logs in

    def get(self, key):
        entry = self._read().get(key)
        if isinstance(entry, dict) and float(entry.get("expire", 0)) - time.time() > self.MARGIN:
            return entry.get("token")
        return None

    def put(self, key, token, expire):
        now = time.time()
        data = {k: v for k, v in self._read().items()
                if isinstance(v, dict) and float(v.get("expire", 0)) > now}
        data[key] = {"token": token, "expire": float(expire)}
        self._write(data)

    def drop(self, key):
        data = self._read()
        if data.pop(key, None) is not None:
            self._write(data)


def token_cache_path(env):
    """Where tokens are kept, or None: PIGEON_TOKEN_CACHE, else $XDG_CACHE_HOME or ~/.cache."""
    setting = env.get("PIGEON_TOKEN_CACHE", "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return setting
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pigeon", "tokens.json")


class SaltApi:
    """A thin client of salt-api's rest_cherrypy: /login with eauth, then low-state runs."""

    SILENCE = 15  # seconds without an event after which deploy() asks whether the action lives

    def __init__(self, url, user, password, eauth="auto", verify=True, timeout=600, token_cache=None):
        if not url:
            raise StacksError("no salt-api URL: set SALTAPI_URL or pass --saltapi-url "
                              "(in the lab: . .lab/env)", EXIT_USAGE)
        self.url = url.rstrip("/")
        self.user, self.password, self.eauth = user, password, eauth
        self.timeout = timeout
        self.session = requests.Session()
        self.verify = verify  # passed on each request: requests lets REQUESTS_CA_BUNDLE override a session's
        self.session.headers["Accept"] = "application/json"
        self.token = None
        self.cache = token_cache  # a TokenCache, or None
        self.cached = False  # whether the token in use came from the cache

    def _post(self, path, payload):
        return self._answer(path, self.request("POST", path, json=payload))

    def request(self, method, path, **kwargs):
        """
        The one request primitive: ``method`` on ``path`` with the token; when salt-api
        refuses a token that came from the cache (401: expired, or a new master), one new
        login and the request again. Transport failures are one-line StacksErrors. Returns
        the response (``stream=True`` and ``timeout`` pass to requests).
        """
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self.cached and path != "/login":
            self.login(fresh=True)
            response = self._send(method, path, **kwargs)
        return response

    def _send(self, method, path, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        try:
            # verify on each request: requests lets REQUESTS_CA_BUNDLE override a session's
            response = self.session.request(method, self.url + path, verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise StacksError(
                f"TLS verification of {self.url} failed ({_reason(exc)}); set REQUESTS_CA_BUNDLE "
                "or --ca-file to the CA that signed salt-api's certificate", EXIT_API) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise StacksError(f"cannot reach salt-api at {self.url} (connection timed out); is "
                              "salt-api running and reachable? (in the lab: make lab)", EXIT_API) from exc
        except requests.exceptions.Timeout as exc:
            raise StacksError(f"no answer from salt-api at {self.url} within the deadline of "
                              f"{self.timeout:g} s; the action may still run on the master: see "
                              "./stacks.py status, or raise --deadline", EXIT_DEADLINE) from exc
        except requests.exceptions.ConnectionError as exc:
            raise StacksError(f"cannot reach salt-api at {self.url} ({_reason(exc)}); is salt-api "
                              "running? (in the lab: make lab)", EXIT_API) from exc
        return response

    def _answer(self, path, response):
        status = response.status_code
        if status == 401:
            raise StacksError(f"salt-api refused the credentials of {self.user!r} (eauth "
                              f"{self.eauth}); check SALTAPI_USER, SALTAPI_PASS and SALTAPI_EAUTH",
                              EXIT_API, status=status)
        if status == 403:
            raise StacksError(f"salt-api: {self.user!r} may not run this; check the master's "
                              "external_auth ACL", EXIT_API, status=status)
        if status == 503:
            raise StacksError(f"salt-api answered HTTP 503 on {path}: the salt-master does not answer "
                              "it; is the salt-master running? (in the lab: make lab)", EXIT_API,
                              status=status)
        if status >= 400:
            raise StacksError(f"salt-api answered HTTP {status} on {path}: {_page_text(response.text)}",
                              EXIT_API, status=status)
        try:
            return response.json()
        except ValueError as exc:
            raise StacksError(f"salt-api answered something that is not JSON on {path}", EXIT_API) from exc

    def login(self, fresh=False):
        """Get a token: from the cache unless ``fresh``, else from /login (then cached)."""
        if not self.user or self.password is None:
            raise StacksError("no salt-api credentials: set SALTAPI_USER and SALTAPI_PASS "
                              "(in the lab: . .lab/env)", EXIT_USAGE)
        key = self.cache.key(self.url, self.user, self.eauth, self.password) if self.cache else None
        if key and fresh:
            self.cache.drop(key)
        token = self.cache.get(key) if key and not fresh else None
        self.cached = token is not None
        if token is None:
            data = self._post("/login", {"username": self.user, "password": self.password,
                                         "eauth": self.eauth})
            try:
                token = data["return"][0]["token"]
                expire = data["return"][0].get("expire", 0)
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise StacksError("salt-api login returned no token", EXIT_API) from exc
            if key and expire:
                self.cache.put(key, token, expire)
        self.token = token
        self.session.headers["X-Auth-Token"] = self.token

    def runner(self, fun, arg=None, kwarg=None):
        """Run a runner function synchronously; returns its return value."""
        if self.token is None:
            self.login()
        low = {"client": "runner", "fun": fun, "arg": list(arg or []), "kwarg": dict(kwarg or {})}
        data = self._post("/", [low])
        try:
            return data["return"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise StacksError(f"salt-api returned no result for {fun}", EXIT_API) from exc


    TICK = 0.5  # seconds between two calls of on_tick while nothing happens

    def deploy(self, action, kwarg, on_step=None, on_wait=None, on_tick=None, on_job=None, on_plan=None):
        """
        Run the deploy runner's ``action`` (deploy.release, ...) with ``kwarg`` and return
        what it returned: {"outcome": ...} (``_utils/pigeon_outcome.py``), or {"refused":
        one line}. With ``on_step``, each step is passed to it as it finishes ({"step",
        "result", "skipped", "seconds"}): the runner runs through the runner_async client
        while salt-api's event stream (/events) is read for the runner's table of steps
        (salt/run/<jid>/steps), the orchestration's progress events (salt/job/<jid>/prog/...:
        the deploy runner runs the orchestration under its own job id, one event as each
        step ends) and its return (salt/run/<jid>/ret). ``on_wait(data)`` is told when the
        action waits for another's lock (salt/run/<jid>/waiting: {"holder": {action,
        version, user, since}, "wait": seconds}); ``on_tick(step)`` is called every TICK
        seconds of silence with the step that runs (None before the first); ``on_job(jid)``
        as soon as the master gave the action its job id; ``on_plan()`` when the action holds
        the lock and has its plan (the table of steps came).
        Falls back to the synchronous runner client when the master does not allow
        runner_async.
        """
        fun = f"deploy.{action}"
        if on_step is None:
            return self.runner(fun, kwarg=kwarg)
        stream = self._open_stream()
        try:
            low = {"client": "runner_async", "fun": fun, "kwarg": kwarg}
            try:
                data = self._post("/", [low])
            except StacksError as exc:
                if exc.status in (400, 403):  # runner_async not enabled, or not in the ACL
                    stream.close()
                    return self.runner(fun, kwarg=kwarg)
                raise
            try:
                jid = data["return"][0]["jid"]
            except (KeyError, IndexError, TypeError) as exc:
                raise StacksError("salt-api did not start the action", EXIT_API) from exc
            if on_job:
                on_job(jid)
            return self._follow(stream, jid, kwarg.get("app"), on_step, on_wait, on_tick, on_plan=on_plan)
        finally:
            stream.close()

    def watch(self, jid, app, ended, on_step=None, on_tick=None, before=None):
        """
        Follow an action started elsewhere (its job id ``jid``, on ``app``) to its end, and
        return what the deploy runner returned, as ``deploy`` does. Its steps are passed to
        ``on_step`` as they end when the runner's table of steps is seen (an action still
        waiting for the lock), else they come with the outcome. ``ended()`` gives the job's
        history entry once it has one (asked first, and after each quiet while): then
        {"history": entry}. ``before()`` is called once the event stream is open (what it
        makes happen is not missed).
        """
        stream = self._open_stream()
        try:
            if before:
                before()
            entry = ended()
            if entry:
                return {"history": entry}
            return self._follow(stream, jid, app, on_step or (lambda step: None), None, on_tick, ended=ended)
        finally:
            stream.close()

    def _open_stream(self):
        """salt-api's event stream, open (logged in first when no token is held)."""
        if self.token is None:
            self.login()
        stream = EventStream(self)
        if stream.status == 401:
            stream.close()
            raise StacksError(f"salt-api refused the token of {self.user!r} on its event stream; "
                              "check SALTAPI_USER, SALTAPI_PASS and SALTAPI_EAUTH", EXIT_API)
        return stream

    def _follow(self, stream, jid, app, on_step, on_wait, on_tick, on_plan=None, ended=None):
        """Read the event stream for the events of runner job ``jid`` until its return. After
        each quiet while: ``ended()`` (its history entry, then {"history": entry}), else
        whether the app's lock is free (twice: the action died)."""
        deadline = time.monotonic() + self.timeout
        unlocked, names, finished = 0, {}, set()
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise StacksError(f"the deadline of {self.timeout:g} s passed while job {jid} still runs on "
                                  f"the master; follow it with ./stacks.py watch {jid} --app-name {app} "
                                  "(or raise --deadline)", EXIT_DEADLINE)
            pause = self.TICK if on_tick else self.SILENCE
            item = stream.next(min(deadline, now + pause, quiet_since + self.SILENCE))
            if item is None:
                if on_tick:
                    on_tick(next((step for sid, step in names.items() if sid not in finished), None))
                if time.monotonic() - quiet_since >= self.SILENCE:  # a quiet while: is the action still there?
                    quiet_since = time.monotonic()
                    if ended:
                        entry = ended()
                        if entry:
                            return {"history": entry}
                        continue
                    unlocked = unlocked + 1 if self._lock_free(app, deadline) else 0
                    if unlocked >= 2:
                        raise StacksError("the action ended without a result (did its process on "
                                          "the master die?); see ./stacks.py status and history",
                                          EXIT_FAILED)
                continue
            tag, event = item
            if tag.startswith((f"salt/run/{jid}/", f"salt/job/{jid}/")):
                quiet_since = time.monotonic()
            if tag == f"salt/run/{jid}/steps":  # the runner's table: state ID -> step
                names = (event.get("data") or {}).get("steps") or {}
                if on_plan:
                    on_plan()
            elif tag == f"salt/run/{jid}/waiting":
                if on_wait:
                    on_wait(event.get("data") or {})
            elif tag.startswith(f"salt/job/{jid}/prog/"):
                state = event.get("data", {}).get("ret", {})
                if state.get("result") is None and not str(state.get("comment", "")).startswith(
                        ("State was not run because", "One or more requisite failed")):
                    continue  # a step started in parallel (its end comes with the outcome)
                if state.get("__id__") in names:  # a step of the plan (looked up, not parsed)
                    finished.add(state["__id__"])
                    on_step(progress_step(names[state["__id__"]], state))
            elif tag == f"salt/run/{jid}/ret":
                return event.get("data", {}).get("return")

    def _lock_free(self, app, deadline):
        """Whether no action holds the deploy lock of ``app`` (the deploy runner holds it from
        before its plan to after its commit or abort; the kernel frees it when its process dies). Asked of
        the registry, without looking at the minions; a master that does not answer is one line."""
        timeout, self.timeout = self.timeout, max(1.0, min(30.0, deadline - time.monotonic()))
        try:
            status = self.runner("stacks.status", kwarg={"app": app, "observe": False})
        except StacksError as exc:
            if exc.code == EXIT_DEADLINE:
                raise StacksError(f"lost the action: salt-api did not answer within {self.timeout:g} s "
                                  "(is the salt-master running? in the lab: make lab); see "
                                  "./stacks.py status once it answers", EXIT_API) from exc
            raise StacksError(f"lost the action: {exc}", exc.code) from exc
        finally:
            self.timeout = timeout
        entry = status.get(app) if isinstance(status, dict) else None
        return isinstance(entry, dict) and entry.get("lock") is None


def progress_step(name, state):
    """A step of the outcome's shape from an orchestration's progress event of that step."""
    # as pigeon_outcome.build judges it: a step whose onfail had nothing to do, or whose
    # requisite failed, did not run
    skipped = str(state.get("comment", "")).startswith(("State was not run because",
                                                        "One or more requisite failed"))
    return {"step": name, "result": None if skipped else state.get("result"), "skipped": skipped,
            "seconds": round((state.get("duration") or 0) / 1000, 3)}


class EventStream:
    """salt-api's /events (server-sent events), read in a thread: (tag, data) pairs."""

    def __init__(self, api):
        self.queue = queue.Queue()
        self.response = None
        opened = threading.Event()

        def read():
            try:
                self.response = api.request("GET", "/events", stream=True, timeout=(10, None))
                opened.set()
                for line in self.response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        try:
                            event = json.loads(line[5:].strip())
                        except ValueError:
                            continue
                        self.queue.put((event.get("tag", ""), event))
            except Exception as exc:  # pylint: disable=broad-except
                self.queue.put(("pigeon/stream-error", {"error": str(exc)}))
            finally:
                opened.set()

        threading.Thread(target=read, daemon=True).start()
        opened.wait(10)

    @property
    def status(self):
        """The HTTP status of /events (None until it answered)."""
        return getattr(self.response, "status_code", None)

    def next(self, until):
        """The next (tag, event), or None when none came before ``until`` (monotonic)."""
        remaining = until - time.monotonic()
        try:
            tag, event = self.queue.get(timeout=max(remaining, 0.001))
        except queue.Empty:
            return None
        if tag == "pigeon/stream-error":
            raise StacksError(f"salt-api's event stream broke ({event['error'][:120]}); the action "
                              "may still run: see ./stacks.py status", EXIT_API)
        return tag, event

    def close(self):
        """Stop reading. The reader thread is blocked in a read on the socket: shutting the
        socket down ends that read (closing the response would wait for it)."""
        connection = getattr(getattr(self.response, "raw", None), "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _reason(exc):
    text = str(exc)
    for hint in ("Connection refused", "Name or service not known", "certificate verify failed",
                 "timed out", "No route to host"):
        if hint in text:
            return hint.lower()
    return text.split(":")[-1].strip(" ')>\"")[:120] or type(exc).__name__


def _page_text(text, limit=200):
    """An error page (cherrypy's HTML, or plain text) as one short line."""
    title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
    para = re.search(r"<p>(.*?)</p>", text, re.S | re.I)
    if title or para:
        text = " - ".join(m.group(1) for m in (title, para) if m)
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text[:limit] + ("..." if len(text) > limit else "")
