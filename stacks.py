#!/usr/bin/env python3
"""
stacks.py: blue/green deployments of dockerized apps, through salt-api.

    ./stacks.py release    --app-name APP --version V   # start V, internal/preview traffic only
    ./stacks.py activate   --app-name APP [--version V] # V takes production; the old active stays as rollback target
    ./stacks.py rollback   --app-name APP               # the inactive stack takes production back
    ./stacks.py deactivate --app-name APP --version V [--force]
    ./stacks.py status     [--app-name APP] [--json]
    ./stacks.py history    --app-name APP [--json]
    ./stacks.py --app-name APP --version V --action release   # the original form

Settings come from SALTAPI_URL, SALTAPI_USER, SALTAPI_PASS, SALTAPI_EAUTH (as
salt-pepper) and REQUESTS_CA_BUNDLE; flags override them. TLS is verified.
The salt-api token is kept between runs in ~/.cache/pigeon/tokens.json (mode
0600; PIGEON_TOKEN_CACHE names another file, or "off"; --no-token-cache).

Exit codes: 0 done (or already done); 1 the action failed or was refused;
2 bad usage; 3 salt-api unreachable, TLS or authentication failed; 4 the
deadline passed (the orchestration may still be running: see status).
"""

import argparse
import hashlib
import json
import os
import queue
import random
import re
import socket
import sys
import threading
import time

import requests

ACTIONS = ("release", "activate", "deactivate", "rollback")
VIEWS = ("status", "history")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API, EXIT_DEADLINE = 0, 1, 2, 3, 4
MAX_WAIT = 3600  # the deploy runner's bound of wait (pigeon_schema.MAX_WAIT)
APP_SHAPE = re.compile(r"[a-z][a-z0-9_-]{0,40}")  # pigeon_schema.APP_RE
VERSION_SHAPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # pigeon_schema.VERSION_RE


class StacksError(Exception):
    """A failure to show as one line; ``code`` is the exit code."""

    def __init__(self, message, code=EXIT_FAILED, report=None):
        super().__init__(message)
        self.code = code
        self.report = report  # what is known of the action so far, for --json


# ---------------------------------------------------------------------------
# salt-api client
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
        response = self._send(path, payload)
        if response.status_code == 401 and self.cached and path != "/login":
            # a cached token salt-api no longer knows (expired, or a new master): log in again
            self.login(fresh=True)
            response = self._send(path, payload)
        return self._answer(path, response)

    def _send(self, path, payload):
        try:
            response = self.session.post(self.url + path, json=payload, timeout=self.timeout,
                                         verify=self.verify)
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
        if response.status_code == 401:
            raise StacksError(f"salt-api refused the credentials of {self.user!r} (eauth "
                              f"{self.eauth}); check SALTAPI_USER, SALTAPI_PASS and SALTAPI_EAUTH",
                              EXIT_API)
        if response.status_code == 403:
            raise StacksError(f"salt-api: {self.user!r} may not run this; check the master's "
                              "external_auth ACL", EXIT_API)
        if response.status_code == 503:
            raise StacksError(f"salt-api answered HTTP 503 on {path}: the salt-master does not answer "
                              "it; is the salt-master running? (in the lab: make lab)", EXIT_API)
        if response.status_code >= 400:
            raise StacksError(f"salt-api answered HTTP {response.status_code} on {path}: "
                              f"{_page_text(response.text)}", EXIT_API)
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


    def deploy(self, action, kwarg, on_step=None):
        """
        Run the deploy runner's ``action`` (deploy.release, ...) with ``kwarg`` and return
        what it returned: the orchestration's result, or {"refused": one line}. With
        ``on_step``, each step is passed to it as it finishes: the runner runs through the
        runner_async client while salt-api's event stream (/events) is read for the
        orchestration's progress events (salt/job/<jid>/prog/...: the deploy runner runs
        the orchestration under its own job id) and its return (salt/run/<jid>/ret).
        Falls back to the synchronous runner client when the master does not allow
        runner_async.
        """
        fun = f"deploy.{action}"
        if on_step is None:
            return self.runner(fun, kwarg=kwarg)
        if self.token is None:
            self.login()
        stream = EventStream(self)
        if stream.status == 401 and self.cached:
            stream.close()
            self.login(fresh=True)
            stream = EventStream(self)
        if stream.status == 401:
            stream.close()
            raise StacksError(f"salt-api refused the token of {self.user!r} on its event stream; "
                              "check SALTAPI_USER, SALTAPI_PASS and SALTAPI_EAUTH", EXIT_API)
        try:
            low = {"client": "runner_async", "fun": fun, "kwarg": kwarg}
            try:
                data = self._post("/", [low])
            except StacksError as exc:
                if "HTTP 400" in str(exc) or "may not run" in str(exc):
                    stream.close()
                    return self.runner(fun, kwarg=kwarg)
                raise
            try:
                jid = data["return"][0]["jid"]
            except (KeyError, IndexError, TypeError) as exc:
                raise StacksError("salt-api did not start the action", EXIT_API) from exc
            deadline = time.monotonic() + self.timeout
            unlocked = 0
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise StacksError("no answer from salt-api within the deadline; the action may "
                                      "still run on the master: see ./stacks.py status, or raise "
                                      "--deadline", EXIT_DEADLINE)
                item = stream.next(min(deadline, now + self.SILENCE))
                if item is None:  # a quiet while: is the action still there?
                    unlocked = unlocked + 1 if self._lock_free(kwarg.get("app"), deadline) else 0
                    if unlocked >= 2:
                        raise StacksError("the action ended without a result (did its process on the "
                                          "master die?); see ./stacks.py status and history",
                                          EXIT_FAILED)
                    continue
                tag, event = item
                if tag.startswith(f"salt/job/{jid}/prog/"):
                    on_step(event.get("data", {}).get("ret", {}))
                elif tag == f"salt/run/{jid}/ret":
                    return event.get("data", {}).get("return")
        finally:
            stream.close()

    SILENCE = 15  # seconds without an event after which deploy() asks whether the action lives

    def _lock_free(self, app, deadline):
        """Whether no action holds the deploy lock of ``app`` (the orchestration holds it from
        its plan to its commit or abort; the kernel frees it when its process dies). Asked of
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


class EventStream:
    """salt-api's /events (server-sent events), read in a thread: (tag, data) pairs."""

    def __init__(self, api):
        self.queue = queue.Queue()
        self.response = None
        opened = threading.Event()

        def read():
            try:
                self.response = api.session.get(api.url + "/events", stream=True, verify=api.verify,
                                                timeout=(10, None))
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


# ---------------------------------------------------------------------------
# orchestration results
STEP_RE = re.compile(r"^pigeon-[a-z]+-(.+?)-(runner|function|state)$")


def step_name(state_id):
    """'pigeon-release-routes-function' -> 'routes'."""
    match = STEP_RE.match(state_id or "")
    return match.group(1) if match else (state_id or "?")


def _minion_failure(step):
    """The one useful line of a failed salt.function / salt.state step."""
    ret = (step.get("changes") or {}).get("ret")
    if isinstance(ret, dict):
        for minion, value in ret.items():
            if isinstance(value, dict):  # salt.state: the failed states of that minion
                failed = [v for v in value.values() if isinstance(v, dict) and v.get("result") is False]
                failed.sort(key=lambda v: v.get("__run_num__", 0))
                real = [v for v in failed if not str(v.get("comment", "")).startswith("One or more requisite")]
                if real or failed:
                    comment = str((real or failed)[0].get("comment", "")).strip()
                    return f"{minion}: {_first_line(comment)}"
            elif value is False:  # salt.state: the minion returned no state result
                return f"{minion} did not return a result; is the minion up? (salt-run manage.status)"
            elif value not in (None, True) and value != "":
                return f"{minion}: {_first_line(str(value))}"
    comment = str(step.get("comment", ""))
    if "No minions matched" in comment or "No minions responded" in comment or "did not respond" in comment:
        return f"{_first_line(comment)}; is the minion up? (salt-run manage.status)"
    match = re.search(r"ERROR: (.+)", comment)
    if match:
        return match.group(1).strip()
    return _first_line(comment)


def _page_text(text, limit=200):
    """An error page (cherrypy's HTML, or plain text) as one short line."""
    title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
    para = re.search(r"<p>(.*?)</p>", text, re.S | re.I)
    if title or para:
        text = " - ".join(m.group(1) for m in (title, para) if m)
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _first_line(text):
    text = text.strip()
    for prefix in ("ERROR: ", "Passed invalid arguments: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no comment)"


def orchestration_outcome(ret):
    """
    Read the runner client's return of state.orchestrate.

    Returns {"ok": bool, "steps": [{"step", "result", "skipped", "comment", "duration_ms"}],
    "error": one line or None, "result": the commit step's return or None,
    "cleaned": versions whose leftovers were removed}; a refusal (the plan's
    ``pigeon-<action>-refused`` state) gives "refused": True and no steps.
    """
    if isinstance(ret, dict) and isinstance(ret.get("refused"), str):
        # the deploy runner's door refused the request (pigeon_schema): nothing ran
        return {"ok": False, "steps": [], "error": ret["refused"], "refused": True, "result": None}
    if not isinstance(ret, dict) or "data" not in ret:
        text = ret if isinstance(ret, str) else json.dumps(ret)[:300]
        return {"ok": False, "steps": [], "error": f"unexpected answer from the master: {_first_line(text)}",
                "result": None}
    data = ret["data"]
    per_master = next(iter(data.values())) if isinstance(data, dict) and data else data
    if isinstance(per_master, list):  # render errors come as a list of strings
        message = _first_line(" ".join(str(x) for x in per_master))
        message = re.sub(r"^Rendering SLS '[^']+' failed: ", "", message)
        return {"ok": False, "steps": [], "result": None,
                "error": f"the orchestration could not be rendered: {message}; check the pillar "
                         "(salt-run pillar.show_pillar) and the master's log"}
    steps = []
    for key, step in sorted(per_master.items(), key=lambda kv: kv[1].get("__run_num__", 0)):
        comment = str(step.get("comment", ""))
        skipped = comment.startswith("State was not run because")
        steps.append({
            "step": step_name(step.get("__id__", key.split("_|-")[1] if "_|-" in key else key)),
            "result": step.get("result"),
            "skipped": skipped,
            "comment": comment,
            "duration_ms": step.get("duration"),
            "raw": step,
        })
    failed = [s for s in steps if s["result"] is False]
    error = None
    if failed:
        real = [s for s in failed if not s["comment"].startswith("One or more requisite failed")]
        first = (real or failed)[0]
        raw = first["raw"]
        fun = raw.get("name", "")
        if first["step"].endswith("refused"):
            # the plan refused the action (the lock held by another action, the state machine,
            # the pillar): the orchestration is that one state, nothing ran
            return {"ok": False, "steps": [], "error": first["comment"], "refused": True, "result": None}
        if isinstance((raw.get("changes") or {}).get("return"), dict) and "Error" in raw["changes"]["return"]:
            error = str(raw["changes"]["return"]["Error"])
        elif fun.startswith("stacks."):
            error = _first_line(json.dumps((raw.get("changes") or {}).get("return")) or first["comment"])
        else:
            error = _minion_failure(raw)
        error = f"step {first['step']} failed: {error}"
    result = None
    for s in steps:
        if s["step"] == "commit" and s["result"]:
            result = (s["raw"].get("changes") or {}).get("return")
    ok = not failed and ret.get("retcode", 0) in (0, None)
    cleaned = leftovers_removed(steps)
    if not ok and error is None:
        error = f"the orchestration returned retcode {ret.get('retcode')}; see the master's log"
    for s in steps:
        del s["raw"]
    return {"ok": ok, "steps": steps, "error": error, "result": result, "cleaned": cleaned}


# the leftover removal states of srv/salt/stacks/running.sls, keyed
# docker_container_|-stacks-running-leftover-<version>-docker-container-absent_|-<container>_|-absent
LEFTOVER_RE = re.compile(r"_\|-stacks-running-leftover-(.+?)-docker-container-absent_\|-")


def leftovers_removed(steps):
    """Versions whose leftover containers (of an interrupted action) a release removed."""
    found = set()
    for step in steps:
        ret = ((step.get("raw") or {}).get("changes") or {}).get("ret")
        for states in (ret or {}).values() if isinstance(ret, dict) else []:
            for key, state in (states or {}).items() if isinstance(states, dict) else []:
                match = LEFTOVER_RE.search(key)
                if match and isinstance(state, dict) and state.get("changes"):
                    found.add(match.group(1))
    return sorted(found)


# ---------------------------------------------------------------------------
# command line
class Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"stacks.py: {message} (see ./stacks.py --help)\n")


def parse_args(argv):
    env = os.environ
    parser = Parser(
        prog="stacks.py",
        description="Blue/green deployments of dockerized apps through salt-api.",
        epilog="Exit codes: 0 done, 1 failed or refused, 2 bad usage, 3 salt-api unreachable or "
               "credentials refused, 4 deadline passed.")
    parser.add_argument("command", nargs="?", choices=ACTIONS + VIEWS, metavar="ACTION",
                        help="release | activate | deactivate | rollback | status | history")
    parser.add_argument("--action", choices=ACTIONS, help="the original form of ACTION")
    parser.add_argument("--app-name", "-a", dest="app", help="the app (a key of the stacks: pillar)")
    parser.add_argument("--version", "-V", dest="version", help="the version (an image tag)")
    parser.add_argument("--force", action="store_true",
                        help="deactivate the active stack (production answers 503)")
    parser.add_argument("--keep-failed", action="store_true",
                        help="leave the containers of a failed release for inspection")
    parser.add_argument("--wait", type=_whole_seconds, default=0, metavar="SECONDS",
                        help=f"wait up to SECONDS (a whole number, at most {MAX_WAIT}) for the "
                             "app's deploy lock instead of failing")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    parser.add_argument("--no-progress", action="store_true",
                        help="print the steps at the end instead of as they finish")
    parser.add_argument("--verbose", "-v", action="store_true", help="tracebacks and raw answers")
    parser.add_argument("--limit", type=int, default=20, help="history: how many entries")
    parser.add_argument("--saltapi-url", default=env.get("SALTAPI_URL"))
    parser.add_argument("--saltapi-user", default=env.get("SALTAPI_USER"))
    parser.add_argument("--saltapi-pass", default=None,
                        help="the password (visible to other users on this host: prefer "
                             "SALTAPI_PASS or --saltapi-pass-file)")
    parser.add_argument("--saltapi-pass-file", default=env.get("SALTAPI_PASS_FILE"), metavar="FILE",
                        help="read the password from FILE ('-': standard input)")
    parser.add_argument("--saltapi-eauth", default=env.get("SALTAPI_EAUTH", "auto"))
    parser.add_argument("--ca-file", default=env.get("REQUESTS_CA_BUNDLE"),
                        help="CA bundle that signed salt-api's certificate")
    parser.add_argument("--no-token-cache", action="store_true",
                        help="log in to salt-api for this run only (see PIGEON_TOKEN_CACHE)")
    parser.add_argument("--insecure", action="store_true",  # insecure-ok: an explicit opt-out, off by default
                        help="do not verify salt-api's TLS certificate (not for production)")
    parser.add_argument("--deadline", "--timeout", dest="timeout", type=_deadline, default=600,
                        metavar="SECONDS", help="give up waiting for the action after SECONDS (exit 4)")
    args = parser.parse_args(argv)
    if args.command and args.action and args.command != args.action:
        parser.error(f"ACTION {args.command} and --action {args.action} disagree")
    args.command = args.command or args.action
    if not args.command:
        parser.error("name an ACTION (release, activate, deactivate, rollback, status, history)")
    if args.command in ACTIONS + ("history",) and not args.app:
        parser.error(f"{args.command} needs --app-name")
    if args.command == "deactivate" and not args.version:
        parser.error("deactivate needs --version")
    # the shape of what is sent (the deploy runner checks it all again, with YAML's reading too)
    if args.app is not None and not APP_SHAPE.fullmatch(args.app):
        parser.error(f"--app-name {args.app!r}: lower-case letters, digits, '-' and '_', starting "
                     "with a letter (at most 41)")
    if args.version is not None and not VERSION_SHAPE.fullmatch(args.version):
        parser.error(f"--version {args.version[:60]!r} is not a valid image tag: 1-128 letters, "
                     "digits, '_', '.', '-', not starting with '.' or '-'")
    if args.force and args.command != "deactivate":
        parser.error("--force applies to deactivate only")
    if args.keep_failed and args.command != "release":
        parser.error("--keep-failed applies to release only")
    if args.limit < 0 or args.limit > 500:
        parser.error("--limit: a whole number from 0 to 500")
    args.saltapi_pass = _password(parser, args, env)
    return args


def _whole_seconds(text):
    """--wait: a whole number of seconds from 0 to MAX_WAIT."""
    if not re.fullmatch(r"[0-9]{1,5}", text.strip()) or int(text) > MAX_WAIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 0 to {MAX_WAIT}")
    return int(text)


def _deadline(text):
    """--deadline: seconds, more than 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value <= 86400):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 and at most 86400")
    return value


def _password(parser, args, env):
    """The salt-api password: --saltapi-pass (with a warning), a file, or SALTAPI_PASS."""
    if args.saltapi_pass is not None:
        print("stacks.py: warning: --saltapi-pass puts the password where other users of this "
              "host can read it (ps); use SALTAPI_PASS or --saltapi-pass-file", file=sys.stderr)
        return args.saltapi_pass
    if args.saltapi_pass_file:
        try:
            if args.saltapi_pass_file == "-":
                return sys.stdin.readline().rstrip("\r\n")
            with open(args.saltapi_pass_file, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--saltapi-pass-file {args.saltapi_pass_file}: {exc.strerror or exc}")
    return env.get("SALTAPI_PASS")


def make_client(args):
    verify = False if args.insecure else (args.ca_file or True)  # insecure-ok: only with --insecure
    path = None if args.no_token_cache else token_cache_path(os.environ)
    return SaltApi(args.saltapi_url, args.saltapi_user, args.saltapi_pass,
                   args.saltapi_eauth, verify=verify, timeout=args.timeout,
                   token_cache=TokenCache(path) if path else None)


def run_action(client, args, out):
    request = {"app": args.app}
    if args.version:
        request["version"] = args.version
    if args.force:
        request["force"] = True
    if args.keep_failed:
        request["keep_failed"] = True
    if args.wait:
        request["wait"] = args.wait
    started = time.monotonic()
    target = f"{args.app} {args.version or ''}".strip()
    out(f"{args.command} {target} through {client.url}")
    shown = []

    def show(step):
        """One line per step as it finishes (progress events), skipping steps that did not run."""
        comment = str(step.get("comment", ""))
        if comment.startswith("State was not run because") or step.get("__id__", "").endswith("refused"):
            return
        shown.append(step.get("__id__"))
        mark = "ok" if step.get("result") else "FAILED"
        out(f"  {step_name(step.get('__id__')):<24} {mark:<7} {(step.get('duration') or 0) / 1000:.1f} s")

    progress = None if args.quiet or args.json or args.no_progress else show
    ret = client.deploy(args.command, request, on_step=progress)
    outcome = orchestration_outcome(ret)
    elapsed = time.monotonic() - started
    if progress is None or not shown:  # no progress events came: the steps at the end
        for step in outcome["steps"]:
            if step["skipped"]:
                continue
            mark = "ok" if step["result"] else "FAILED"
            duration = f"{(step['duration_ms'] or 0) / 1000:.1f} s"
            out(f"  {step['step']:<24} {mark:<7} {duration}")
    report = {"action": args.command, "app": args.app, "version": args.version,
              "ok": outcome["ok"], "error": outcome["error"], "seconds": round(elapsed, 3),
              "steps": [{k: s[k] for k in ("step", "result", "comment", "duration_ms")} for s in outcome["steps"]],
              "result": outcome["result"]}
    if outcome["result"]:
        report["version"] = outcome["result"].get("version", args.version) or args.version
    if outcome.get("refused"):
        raise StacksError(f"{args.command} {target} refused: {outcome['error']}", EXIT_FAILED, report)
    if not outcome["ok"]:
        raise StacksError(f"{args.command} {target} failed: {outcome['error']}", EXIT_FAILED, report)
    if outcome.get("cleaned"):
        out(f"removed what interrupted actions left of {', '.join(outcome['cleaned'])}")
        report["cleaned"] = outcome["cleaned"]
    message = (outcome["result"] or {}).get("message") or ""
    if not args.version and report["version"]:
        target = f"{args.app} {report['version']}"
    out(f"{message}" if message else "done")
    out(f"Finished {args.command} {target} in {elapsed:.1f} s")
    return report


TRAFFIC = {"active": "production", "release": "internal/preview", "inactive": "none"}
ORDER = {"active": 0, "release": 1, "inactive": 2}


def show_status(client, args, out):
    kwarg = {"app": args.app} if args.app else {}
    status = client.runner("stacks.status", kwarg=kwarg)
    if isinstance(status, dict) and isinstance(status.get("refused"), str):
        raise StacksError(f"status refused: {status['refused']}")
    if not isinstance(status, dict):
        raise StacksError(f"stacks.status failed: {_first_line(str(status))}")
    for app, entry in sorted(status.items()):
        out(app)
        observed = entry.get("observed") or {}
        seen = observed.get("containers") or {}
        if not entry["stacks"]:
            out("  no stack: production answers 503")
        has_release = any(s["state"] == "release" for s in entry["stacks"].values())
        for version, stack in sorted(entry["stacks"].items(), key=lambda kv: ORDER.get(kv[1]["state"], 9)):
            traffic = TRAFFIC[stack["state"]]
            if stack["state"] == "active" and not has_release:
                traffic = "production, internal/preview"
            c = seen.get(version, {"healthy": 0, "total": 0, "minions": []})
            out(f"  {version:<16} {stack['state']:<9} slot {stack['slot']}  "
                f"{c['healthy']}/{c['total']} healthy on {','.join(c['minions']) or '-'}  "
                f"traffic: {traffic}  (since {stack.get('since', '?')} by {stack.get('by', '?')})")
        if entry.get("lock"):
            lock = entry["lock"]
            out(f"  locked by {lock.get('action')} {lock.get('version') or ''} of {lock.get('user')} "
                f"since {lock.get('since')}")
        for line in observed.get("drift") or []:
            out(f"  DRIFT: {line}")
    return status


def show_history(client, args, out):
    items = client.runner("stacks.history", kwarg={"app": args.app, "limit": args.limit})
    if isinstance(items, dict) and isinstance(items.get("refused"), str):
        raise StacksError(f"history refused: {items['refused']}")
    if not isinstance(items, list):
        raise StacksError(f"stacks.history failed: {_first_line(str(items))}")
    for item in items:
        out(f"{item.get('when', '?')}  {item.get('action', '?'):<10} {str(item.get('version') or ''):<12} "
            f"{item.get('result', '?'):<8} {item.get('user', '?')} ({item.get('source', '?')})"
            + (f" {item['duration']} s" if item.get("duration") is not None else ""))
    return items


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quiet = args.quiet or args.json

    def out(line):
        if not quiet:
            print(line, flush=True)

    report = None
    try:
        client = make_client(args)
        if args.command in ACTIONS:
            report = run_action(client, args, out)
        elif args.command == "status":
            report = show_status(client, args, out)
        else:
            report = show_history(client, args, out)
    except StacksError as exc:
        error, code, report = exc, exc.code, exc.report
        if args.verbose:
            import traceback  # pylint: disable=import-outside-toplevel
            traceback.print_exc()
        if args.json:
            doc = report if isinstance(report, dict) else {"action": args.command, "app": args.app}
            doc.setdefault("version", args.version)
            doc.update(ok=False, error=str(error))
            print(json.dumps(doc, indent=2, sort_keys=True))
        print(f"stacks.py: {error}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("stacks.py: interrupted; the orchestration may still run on the master: "
              "see ./stacks.py status", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        doc = report if args.command in ACTIONS else {"ok": True, args.command: report}
        print(json.dumps(doc, indent=2, sort_keys=True))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
