"""
The command line of ``./stacks.py``: arguments (``parse_args``), the actions and
views through salt-api (``run_action``; ``show_status``, ``show_history``,
``show_details``, ``show_logs``, ``show_lock``), and
the output: a line per step, one line per error, ``--json``.

``./stacks.py`` calls ``main``; the salt-api client is ``pigeon.saltapi``. An
action's outcome comes from the deploy runner in a documented shape
(``srv/salt/_utils/pigeon_outcome.py``, docs/cli.md): this prints it, and never
reads the orchestration's state IDs.
"""

import argparse
import difflib
import json
import os
import re
import sys
import time

from pigeon.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, StacksError, first_line
from pigeon.help import COMMANDS, command_help
from pigeon.saltapi import SaltApi, TokenCache, token_cache_path

ACTIONS = ("release", "activate", "deactivate", "rollback", "repair", "canary", "abort", "maintenance")
VIEWS = ("status", "history", "details", "logs", "proxy", "lock", "watch", "cancel", "prune")
MAX_WAIT = 3600  # the deploy runner's bound of wait (pigeon_schema.MAX_WAIT)
APP_SHAPE = re.compile(r"[a-z][a-z0-9_-]{0,40}")  # pigeon_schema.APP_RE
VERSION_SHAPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # pigeon_schema.VERSION_RE


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit 2."""

    def error(self, message):
        match = re.match(r"argument ACTION: invalid choice: '([^']*)'", message)
        if match:  # a typo of an action: say which one was meant
            close = difflib.get_close_matches(match.group(1), ACTIONS + VIEWS, n=1)
            message = f"unknown ACTION {match.group(1)!r}" + (f"; did you mean {close[0]}?" if close else
                                                             f"; use one of {', '.join(ACTIONS + VIEWS)}")
        self.exit(EXIT_USAGE, f"stacks.py: {message} (see ./stacks.py --help)\n")


def parse_args(argv):
    env = os.environ
    named = next((a for a in argv if a in COMMANDS), None)
    if named and {"-h", "--help"} & set(argv):  # ./stacks.py release --help: that command's own
        print("\n".join(command_help(named)))
        sys.exit(EXIT_OK)
    parser = Parser(
        prog="stacks.py",
        description="Blue/green deployments of dockerized apps through salt-api.",
        epilog="Exit codes: 0 done, 1 failed or refused, 2 bad usage, 3 salt-api unreachable or "
               "credentials refused, 4 deadline passed.")
    parser.add_argument("command", nargs="?", choices=ACTIONS + VIEWS, metavar="ACTION",
                        help="release | activate | deactivate | rollback | repair | canary | abort | maintenance "
                             "| status | history | details | logs | proxy | lock | watch | cancel | prune")
    parser.add_argument("subject", nargs="?", metavar="status|release|JOB|on|off",
                        help="lock: status (the default) or release; watch, cancel: the job id an action printed; "
                             "maintenance: on or off")
    parser.add_argument("--action", choices=ACTIONS, help="the original form of ACTION")
    parser.add_argument("--app-name", "-a", dest="app", help="the app (a key of the stacks: pillar)")
    parser.add_argument("--version", "-V", dest="version", help="the version (an image tag)")
    parser.add_argument("--force", action="store_true",
                        help="deactivate the active stack (production answers 503)")
    parser.add_argument("--bake", type=_whole_seconds, default=None, metavar="SECONDS",
                        help="activate: watch the new slot's 5xx, health and response time for SECONDS and "
                             "roll production back by itself when one crosses its limit (default: "
                             "stacks:<app>:bake:seconds, else none)")
    parser.add_argument("--percent", type=_percent, default=None, metavar="N",
                        help="canary: the share of production (0-100) the release gets")
    parser.add_argument("--message", default=None, metavar="TEXT",
                        help="maintenance on: what production answers (one line, at most 200 characters)")
    parser.add_argument("--retry-after", type=_retry_after, default=None, metavar="SECONDS",
                        help="maintenance on: the Retry-After of production's 503 (default 300)")
    parser.add_argument("--keep-failed", action="store_true",
                        help="leave the containers of a failed release for inspection")
    parser.add_argument("--wait", type=_whole_seconds, default=0, metavar="SECONDS",
                        help=f"wait up to SECONDS (a whole number, at most {MAX_WAIT}) for the "
                             "app's deploy lock instead of failing")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what the action would do, from the same plan, and change nothing: "
                             "exit 0 when it would be allowed, 1 with the refusal")
    parser.add_argument("--expect-revision", type=_revision, default=None, metavar="N",
                        help="refuse the action unless the registry of the app is at revision N "
                             "(as status shows it): act only on what you checked")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    parser.add_argument("--no-progress", action="store_true",
                        help="print the steps at the end instead of as they finish")
    parser.add_argument("--verbose", "-v", action="store_true", help="tracebacks and raw answers")
    parser.add_argument("--limit", type=int, default=20, help="history: how many entries")
    parser.add_argument("--service", default=None, help="logs: one service's containers only")
    parser.add_argument("--keep", type=int, default=3, metavar="N",
                        help="prune: keep the images of the N newest versions no stack uses (0-100)")
    parser.add_argument("--tail", type=int, default=100, metavar="N",
                        help="logs: the last N lines of each container (1-10000)")
    parser.add_argument("--proxy", action="store_true",
                        help="logs: HAProxy's access log of the app's slots instead of its containers' logs")
    parser.add_argument("--follow", "-f", action="store_true",
                        help=f"logs: then print new lines as they come (asked every {FOLLOW_EVERY:g} s) "
                             "until Ctrl-C")
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
        parser.error(f"name an ACTION ({', '.join(ACTIONS + VIEWS)})")
    if args.command == "lock" and args.subject not in (None, "status", "release"):
        parser.error(f"lock {args.subject[:40]!r}: use lock status or lock release")
    elif args.command == "watch" and not re.fullmatch(r"[0-9]{20}", args.subject or ""):
        parser.error("watch needs the job id an action printed (20 digits): ./stacks.py watch JOB --app-name APP")
    elif args.command == "cancel" and args.subject and not re.fullmatch(r"[0-9]{20}", args.subject):
        parser.error(f"cancel {args.subject[:40]!r}: give the job id an action printed (20 digits), or none "
                     "to cancel every action of the app")
    elif args.command == "maintenance" and args.subject not in ("on", "off"):
        parser.error("maintenance needs on or off: ./stacks.py maintenance on --app-name APP [--message TEXT]")
    elif args.subject and args.command not in ("lock", "watch", "cancel", "maintenance"):
        parser.error(f"{args.subject[:40]!r} after {args.command} is not an option (only lock, watch, "
                     "cancel and maintenance take one)")
    if args.command in ACTIONS + VIEWS[1:] and not args.app:
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
    if args.command == "canary" and args.percent is None:
        parser.error("canary needs --percent N (0-100): the share of production the release gets")
    if args.bake is not None and args.command != "activate":
        parser.error("--bake applies to activate only")
    if args.bake and not {"--deadline", "--timeout"} & {a.split("=")[0] for a in argv}:
        args.timeout = max(args.timeout, args.bake + 300)  # the action ends after its bake window
    if args.percent is not None and args.command != "canary":
        parser.error("--percent applies to canary only")
    for flag, given in (("--message", args.message), ("--retry-after", args.retry_after)):
        if given is not None and not (args.command == "maintenance" and args.subject == "on"):
            parser.error(f"{flag} applies to maintenance on only")
    if args.message is not None and not (1 <= len(args.message) <= 200 and args.message.isprintable()
                                         and all(ord(c) <= 0xFFFF for c in args.message)):
        # pigeon_schema.Message
        parser.error("--message: 1-200 printable characters on one line (no emoji)")
    if args.force and args.command != "deactivate":
        parser.error("--force applies to deactivate only")
    if args.keep_failed and args.command != "release":
        parser.error("--keep-failed applies to release only")
    if args.dry_run and args.command == "prune":
        pass
    elif (args.dry_run or args.expect_revision is not None) and args.command not in ACTIONS:
        parser.error(f"--{'dry-run' if args.dry_run else 'expect-revision'} applies to actions only")
    if args.limit < 0 or args.limit > 500:
        parser.error("--limit: a whole number from 0 to 500")
    if not 0 <= args.keep <= 100:
        parser.error("--keep: a whole number from 0 to 100")
    if not 1 <= args.tail <= 10000:
        parser.error("--tail: a whole number from 1 to 10000")
    if args.service is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", args.service):
        parser.error(f"--service {args.service[:60]!r}: 1-64 letters, digits, '_', '.', '-'")
    for flag, given in (("--proxy", args.proxy), ("--follow", args.follow)):
        if given and args.command != "logs":
            parser.error(f"{flag} applies to logs only")
    if args.proxy and args.service is not None:
        parser.error("--service does not apply to --proxy: HAProxy has one backend per slot, not per service; "
                     "use --version for one stack's requests")
    if args.follow and args.json:
        parser.error("--follow prints lines as they come: leave out --json")
    _check_url(parser, args)
    args.saltapi_pass = _password(parser, args, env)
    return args


def _check_url(parser, args):
    """salt-api's URL: https://host[:port][/path]; http only with --insecure."""  # insecure-ok: refuses http
    url = args.saltapi_url
    if not url:
        return  # said by main, with what to set
    scheme = url.split("://", 1)[0].lower() if "://" in url else None
    if scheme == "http" and not args.insecure:
        parser.error(f"salt-api URL {url}: use https:// (the password and the token would cross "
                     "the network in clear; add --insecure to allow http)")  # insecure-ok: the refusal
    if scheme not in ("http", "https") or not url.split("://", 1)[1].strip("/"):
        parser.error(f"salt-api URL {url!r} is not a URL: https://HOST:PORT, e.g. https://salt.example:8000")


def check_ca_file(path):
    """--ca-file (or REQUESTS_CA_BUNDLE): a readable file of PEM certificates, or a directory;
    else StacksError (one line, exit 2)."""
    if not path or os.path.isdir(path):
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError as exc:
        raise StacksError(f"--ca-file {path}: {exc.strerror or exc}; give the certificate that signed "
                          "salt-api's (in the lab: .lab/tls/ca.crt)", EXIT_USAGE) from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise StacksError(f"--ca-file {path}: not a PEM CA bundle (no BEGIN CERTIFICATE line); give the "
                     "certificate that signed salt-api's (in the lab: .lab/tls/ca.crt)", EXIT_USAGE)


def _whole_seconds(text):
    """--wait: a whole number of seconds from 0 to MAX_WAIT."""
    if not re.fullmatch(r"[0-9]{1,5}", text.strip()) or int(text) > MAX_WAIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 0 to {MAX_WAIT}")
    return int(text)


def _percent(text):
    """--percent: a whole number from 0 to 100."""
    if not re.fullmatch(r"[0-9]{1,3}", text.strip()) or int(text) > 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 100")
    return int(text)


def _retry_after(text):
    """--retry-after: whole seconds from 1 to a day."""
    if not re.fullmatch(r"[0-9]{1,5}", text.strip()) or not 1 <= int(text) <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 1 to 86400")
    return int(text)


def _revision(text):
    """--expect-revision: the registry's revision, a whole number."""
    if not re.fullmatch(r"[0-9]{1,15}", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a revision (a whole number, as status shows it)")
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
    if not args.insecure:
        check_ca_file(args.ca_file)
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
    if args.expect_revision is not None:
        request["expect_revision"] = args.expect_revision
    if args.percent is not None:
        request["percent"] = args.percent
    if args.bake is not None:
        request["bake"] = args.bake
    if args.command == "maintenance":
        request["enable"] = args.subject == "on"
        if args.message is not None:
            request["message"] = args.message
        if args.retry_after is not None:
            request["retry_after"] = args.retry_after
    if args.dry_run:
        return show_plan(client, args, dict(request, dry_run=True), out)
    started = time.monotonic()
    target = f"{args.app} {args.version or ''}".strip()
    header = f"{args.command} {target} through {client.url}"
    said = []

    def job(jid):
        """The first line, with the job id once the master gave one (watch JOB follows it)."""
        args.job = jid
        said.append(header)
        out(f"{header} (job {jid})")

    shown = []
    ticker = Ticker(started) if sys.stdout.isatty() else None

    def show(step):
        """One line per step as it finishes (progress events), skipping steps that did not run."""
        args.stepped = True
        if ticker:
            ticker.clear(step_ended=True)
        if step.get("skipped"):
            return
        shown.append(step["step"])
        out(step_line(step))

    def waiting(data):
        """One line when the action waits for another's lock: whose, and for how long at most."""
        args.waiting = True
        if ticker:
            ticker.clear()
        holder = data.get("holder") or {}
        doing = " ".join(str(x) for x in (holder.get("action"), holder.get("version")) if x)
        out(f"  waiting up to {data.get('wait')} s for the lock of {args.app}: {doing or 'an action'} "
            f"of {holder.get('user') or 'unknown'} since {holder.get('since') or '?'}")

    progress = None if args.quiet or args.json or args.no_progress else show
    if progress is None:
        out(header)
        said.append(header)
    try:
        answer = client.deploy(args.command, request, on_step=progress, on_wait=waiting if progress else None,
                               on_tick=ticker.tick if progress and ticker else None, on_job=job,
                               on_plan=lambda: setattr(args, "stepped", True))
    finally:
        if ticker:  # also before an error's line, or Ctrl-C's
            ticker.clear()
    if not said:  # the master has no runner_async: no job id, no progress
        out(header)
    outcome = answer.get("outcome") if isinstance(answer, dict) else None
    if not isinstance(outcome, dict):
        if isinstance(answer, dict) and isinstance(answer.get("refused"), str):  # the door refused
            outcome = {"ok": False, "refused": True, "error": answer["refused"], "steps": []}
        else:
            raise StacksError(f"deploy.{args.command} returned no outcome: {first_line(str(answer))}")
    elapsed = time.monotonic() - started
    for step in outcome.get("steps") or []:  # the steps no progress event showed (all, without
        if not step.get("skipped") and step["step"] not in shown:  # progress; one started in parallel)
            out(step_line(step))
    report = {"action": args.command, "app": args.app, "version": args.version}
    report.update({k: v for k, v in outcome.items() if k not in ("action", "app")})
    report["version"] = outcome.get("version") or args.version
    report["seconds"] = round(elapsed, 3)
    if getattr(args, "job", None):
        report["job"] = args.job
    if not outcome.get("ok"):
        if not args.version and outcome.get("version"):  # the version the registry chose
            target = f"{args.app} {outcome['version']}"
        raise StacksError(f"{args.command} {target} {failure(outcome)}", EXIT_FAILED, report)
    for line in done_lines(dict(outcome, action=args.command)):
        out(line)
    message = (outcome.get("changed") or {}).get("message") or ""
    if not args.version and report["version"]:
        target = f"{args.app} {report['version']}"
    out(f"{message}" if message else "done")
    out(f"Finished {args.command} {target} in {elapsed:.1f} s")
    return report


def repaired(outcome):
    """What a repair did to the containers, in lines."""
    done = outcome.get("containers") or {}
    lines = [f"{how} (it was {'stopped' if how == 'started' else 'missing'}): {', '.join(names)}"
             for how, names in (("started", sorted(n for n, h in done.items() if h == "started")),
                                ("created", sorted(n for n, h in done.items() if h == "created"))) if names]
    return lines or (["every container was running: nothing started"] if not outcome.get("cleaned") else [])


class Ticker:
    """On a terminal, the line under the last step: what runs now, and for how long
    (rewritten in place every half second, erased before the next line). The time counts
    from the end of the step before (from the start for the first)."""

    def __init__(self, started, stream=None):
        self.since, self.stream, self.shown = started, stream or sys.stdout, False

    def tick(self, step):
        text = f"  {step or 'starting':<24} ...     {time.monotonic() - self.since:.1f} s"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self.shown = True

    def clear(self, step_ended=False):
        if step_ended:
            self.since = time.monotonic()
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def step_line(step):
    """'  routes                   ok      0.1 s' (a step of the outcome)."""
    mark = "ok" if step.get("result") else "FAILED"
    return f"  {step.get('step', '?'):<24} {mark:<7} {float(step.get('seconds') or 0):.1f} s"


def show_plan(client, args, request, out):
    """--dry-run: the plan the action would make, as lines; a refusal is the action's own line."""
    target = f"{args.app} {args.version or ''}".strip()
    answer = client.runner(f"deploy.{args.command}", kwarg=request)
    if isinstance(answer, dict) and isinstance(answer.get("refused"), str):
        raise StacksError(f"{args.command} {target} refused: {answer['refused']}", EXIT_FAILED,
                          {"action": args.command, "app": args.app, "version": args.version,
                           "dry_run": True, "ok": False, "error": answer["refused"]})
    plan = answer.get("dry_run") if isinstance(answer, dict) else None
    if not isinstance(plan, dict):
        raise StacksError(f"deploy.{args.command} dry run failed: {first_line(str(answer))}")
    for line in plan_lines(plan):
        out(line)
    return {"action": args.command, "app": args.app, "version": plan.get("version"), "dry_run": True,
            "ok": True, "error": None, "plan": plan}


def plan_lines(plan):
    """What a plan (stacks.plan) says it would do, for people."""
    action, app, version = plan.get("action"), plan.get("app"), plan.get("version")
    lines = [f"dry run: {action} {app} {version or ''} at registry revision {plan.get('generation')}"
             .replace("  ", " ")]
    if plan.get("noop"):
        lines.append(f"  nothing to do: {plan.get('message') or 'already done'}")
        return lines
    cfg, lb = plan.get("config") or {}, plan.get("loadbal") or {}
    start = plan.get("start")
    if start:
        cts = start.get("containers") or []
        lines.append(f"  start {len(cts)} containers of {start.get('version', version)} in slot "
                     f"{start.get('slot')} on {cfg.get('target')} ({cfg.get('target_type')}), "
                     f"network {start.get('network')}:")
        for c in cts:
            lines.append(f"    {c.get('name')}  {c.get('image')}" + ("  (load-balanced)" if c.get("registered") else ""))
        lines.append(f"  remove containers of versions the registry does not know (kept: "
                     f"{', '.join(start.get('keep') or []) or 'none'})")
        lines.append(f"  gate: docker health of every container, then {start.get('expected_up')} servers "
                     f"UP in HAProxy backend {start.get('backend')} (up to {lb.get('healthcheck_timeout')} s)")
    if plan.get("converge_loadbal"):
        lines.append(f"  apply the docker and haproxy states on {lb.get('target')} (its loadbal: pillar is new)")
    gate = plan.get("gate")
    if gate:
        lines.append(f"  gate: {gate.get('expected_up')} servers UP in HAProxy backend {gate.get('backend')}")
    before, after = plan.get("routes_before") or {}, plan.get("routes") or {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            # a key without value: no stack (503) for a route, nothing for a version, canary, maintenance
            none = "none (503)" if key.rpartition("/")[2] in ("production", "internal") else "none"
            lines.append(f"  route {key}: {before.get(key) or none} -> {after.get(key) or none}")
    for stop in plan.get("stop") or []:
        drain = (f"drain backend {stop.get('backend')} (up to {lb.get('drain_timeout')} s), then "
                 if stop.get("state") in ("active", "release") else "")
        lines.append(f"  {drain}stop and remove the containers of {stop.get('version')}")
    for v, state in sorted((plan.get("states") or {}).items()):
        lines.append(f"  {v}: {state or 'deactivated'}")
    if plan.get("message"):
        lines.append(f"  then: {plan['message']}")
    return lines


TRAFFIC = {"active": "production", "release": "internal/preview", "inactive": "none"}
ORDER = {"active": 0, "release": 1, "inactive": 2}


def show_status(client, args, out):
    kwarg = {"app": args.app} if args.app else {}
    status = client.runner("stacks.status", kwarg=kwarg)
    if isinstance(status, dict) and isinstance(status.get("refused"), str):
        raise StacksError(f"status refused: {status['refused']}")
    if not isinstance(status, dict):
        raise StacksError(f"stacks.status failed: {first_line(str(status))}")
    for app, entry in sorted(status.items()):
        out(f"{app}  (revision {entry.get('generation')}: --expect-revision takes it)")
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
                f"{c['healthy']}/{c['total']} healthy"
                + (f" ({c['starting']} starting)" if c.get("starting") else "")
                + f" on {','.join(c['minions']) or '-'}  "
                f"traffic: {traffic}  (since {stack.get('since', '?')} by {stack.get('by', '?')})")
        traffic_ = entry.get("traffic") or {}
        if traffic_.get("canary"):
            release = next((v for v, s in entry["stacks"].items() if s["state"] == "release"), "?")
            out(f"  canary: {release} gets {traffic_['canary']} % of production (./stacks.py abort ends it, "
                "activate completes it)")
        if traffic_.get("maintenance"):
            out(f"  MAINTENANCE: production answers 503 \"{traffic_['maintenance'].get('message')}\" "
                f"(Retry-After {traffic_['maintenance'].get('retry_after')} s); ./stacks.py maintenance off ends it")
        bake = entry.get("bake")
        if isinstance(bake, dict) and bake.get("result") in ("failed", "cancelled"):
            out(f"  last bake: {bake.get('version')} at {bake.get('when')}: {bake_line(bake)[len('bake: '):]}")
        if entry.get("lock"):
            out(f"  locked by {lock_holder(entry['lock'])}")
        balancers = observed.get("balancers") or {}
        if len(balancers) > 1:  # what each load balancer routes (one alone: the traffic column says it)
            for minion, routes in sorted(balancers.items()):
                out(f"  routes on {minion}: " + (", ".join(f"{key} -> {value}" for key, value in sorted(routes.items()))
                                                 or "none (503)"))
        for line in observed.get("drift") or []:
            out(f"  DRIFT: {line}")
    return status


def watch_action(client, args, out, before=None):
    """Follow an action started elsewhere (its job id) to its end, and print its outcome as the
    action itself would; when it already ended, its entry in the history."""
    out(f"watching job {args.subject} on {args.app} through {client.url}")
    ticker = Ticker(time.monotonic()) if sys.stdout.isatty() and not (args.quiet or args.json) else None

    shown = []

    def show(step):
        if ticker:
            ticker.clear(step_ended=True)
        if not step.get("skipped"):
            shown.append(step["step"])
            out(step_line(step))

    def ended():
        """The job's entry in the app's history, once it has one."""
        entries = client.runner("stacks.history", kwarg={"app": args.app, "limit": 0})
        return next((e for e in reversed(entries) if isinstance(e, dict) and e.get("job") == args.subject),
                    None) if isinstance(entries, list) else None

    try:
        answer = client.watch(args.subject, args.app, ended, on_step=show,
                              on_tick=ticker.tick if ticker else None, before=before)
    finally:
        if ticker:
            ticker.clear()
    if isinstance(answer, dict) and "history" in answer:  # it ended: what the history says of it
        entry = answer["history"]
        out(f"job {args.subject} ended: {entry.get('action')} {entry.get('version') or ''} {entry.get('result')} "
            f"at {entry.get('finished') or entry.get('when')}".replace("  ", " "))
        if entry.get("result") != "success":
            raise StacksError(f"{entry.get('action')} {args.app} {entry.get('version') or ''} {entry.get('result')}: "
                              f"{entry.get('error') or entry.get('message') or 'see ./stacks.py history'}"
                              .replace("  ", " "), EXIT_FAILED, {"app": args.app, "job": args.subject, "entry": entry})
        out(entry.get("message") or "done")
        return {"app": args.app, "job": args.subject, "entry": entry}
    outcome = answer.get("outcome") if isinstance(answer, dict) else None
    if not isinstance(outcome, dict):
        raise StacksError(f"job {args.subject} returned no outcome: {first_line(str(answer))}")
    for step in outcome.get("steps") or []:  # attached after the table of steps: at the end
        if not step.get("skipped") and step["step"] not in shown:
            out(step_line(step))
    target = f"{outcome.get('app')} {outcome.get('version') or ''}".strip()
    if not outcome.get("ok"):
        raise StacksError(f"{outcome.get('action')} {target} {failure(outcome)}", EXIT_FAILED,
                          dict(outcome, job=args.subject))
    for line in done_lines(outcome):
        out(line)
    out((outcome.get("changed") or {}).get("message") or "done")
    return dict(outcome, job=args.subject)


def failure(outcome):
    """'refused: …', 'failed: …' or 'cancelled by …' (after the action and its target)."""
    error = str(outcome.get("error"))
    if outcome.get("refused"):
        return f"refused: {error}"
    return error if error.startswith("cancelled by ") else f"failed: {error}"


def bake_line(bake):
    """'bake: passed after 20.0 s: 1834 responses, 0.0 % 5xx, response time 2 ms' (an activate's)."""
    if bake.get("result") == "skipped":
        return f"bake: skipped: {bake.get('why')}"
    seen = (f"{bake.get('responses')} responses, {bake.get('5xx_percent')} % 5xx, response time "
            f"{bake.get('rtime_ms')} ms")
    if bake.get("result") == "failed":
        return (f"bake: failed after {bake.get('seconds')} s: {bake.get('breach')}; "
                + (f"production rolled back to {bake['rolled_back_to']}" if bake.get("rolled_back_to")
                   else "the rollback failed"))
    return f"bake: {bake.get('result')} after {bake.get('seconds')} s: {seen}"


def done_lines(outcome):
    """What an action that succeeded did besides its steps: leftovers removed, a repair's
    containers, a prune after a deactivate."""
    lines = []
    if outcome.get("cleaned"):
        lines.append(f"removed what interrupted actions left of {', '.join(outcome['cleaned'])}")
    pruned = (outcome.get("changed") or {}).get("pruned")
    if isinstance(pruned, dict):  # stacks:<app>:prune:after_deactivate
        images = sum(len(v) for v in (pruned.get("removed") or {}).values())
        folders = sum(len(v) for v in (pruned.get("folders") or {}).values())
        lines.append(f"pruned: {images} images and {folders} build folders removed"
                     + (f"; prune failed: {pruned['errors'][0]} (run ./stacks.py prune)" if pruned.get("errors")
                        else ""))
    if isinstance(outcome.get("bake"), dict):
        lines.append(bake_line(outcome["bake"]))
    if outcome.get("action") == "repair" and not (outcome.get("changed") or {}).get("noop"):
        lines += repaired(outcome)
    return lines


def cancel_waiting(client, args, out):
    """Stop the app's actions (or the one of job JOB): those waiting for its lock end without
    running; the one holding it stops before its next step up to its routes."""
    kwarg = {"app": args.app, **({"job": args.subject} if args.subject else {})}
    answer = client.runner("deploy.cancel", kwarg=kwarg)
    if isinstance(answer, dict) and isinstance(answer.get("refused"), str):
        raise StacksError(f"cancel refused: {answer['refused']}")
    done = answer.get("cancel") if isinstance(answer, dict) else None
    if not isinstance(done, dict):
        raise StacksError(f"deploy.cancel failed: {first_line(str(answer))}")
    which = f"job {args.subject} of {args.app}" if args.subject else f"the actions of {args.app}"
    out(f"{which}: cancelled; one that waits for the lock stops now and nothing of it runs")
    holder = done.get("holder")
    if holder and (not args.subject or holder.get("job") == args.subject):
        out(f"{args.app} is locked by {lock_holder(holder)}: it stops before its next step, unless its "
            f"routes step ran already (then it runs to its end); see ./stacks.py status")
    elif holder:
        out(f"{args.app} is locked by {lock_holder(holder)}, another job: it runs on")
    else:
        out(f"{args.app} is not locked")
    return done


def prune_images(client, args, out):
    """Remove the images of the app's versions that no stack uses (see deploy.prune)."""
    kwarg = {"app": args.app, "keep_last": args.keep}
    if args.dry_run:
        kwarg["dry_run"] = True
    answer = client.runner("deploy.prune", kwarg=kwarg)
    if isinstance(answer, dict) and isinstance(answer.get("refused"), str):
        raise StacksError(f"prune refused: {answer['refused']}")
    done = answer.get("prune") if isinstance(answer, dict) else None
    if not isinstance(done, dict):
        raise StacksError(f"deploy.prune failed: {first_line(str(answer))}")
    verb = "would remove" if done.get("dry_run") else "removed"
    for minion, removed in sorted((done.get("removed") or {}).items()):
        kept = (done.get("kept") or {}).get(minion) or []
        out(f"{minion}: {verb} {len(removed)} images, kept {len(kept)}")
        for tag in removed:
            out(f"  {verb} {tag}")
        for tag in kept:
            out(f"  kept {tag}")
        for folder in (done.get("folders") or {}).get(minion) or []:
            out(f"  {verb} the build folder {folder}")
    if done.get("errors"):
        raise StacksError(f"prune of {args.app}: {done['errors'][0]}"
                          + (f" (and {len(done['errors']) - 1} more)" if len(done["errors"]) > 1 else ""),
                          EXIT_FAILED, done)
    return done


def _on_interrupt(client, args, out, ask=None):
    """Ctrl-C during an action. On a terminal it asks: detach (the action goes on) or cancel.
    Elsewhere (CI, a pipe): an action still waiting for the lock is cancelled (an aborted job
    must not deploy later), one that runs is left to run, with how to follow it."""
    waiting = getattr(args, "waiting", False) and not getattr(args, "stepped", False)
    interactive = ask is not None or (sys.stdin.isatty() and sys.stderr.isatty())
    if interactive:
        answer = (ask or _ask_detach_or_cancel)(args)
        if answer == "cancel":
            return _cancel_on_interrupt(client, args, out)
    elif waiting:
        return _cancel_on_interrupt(client, args, out)
    print(f"stacks.py: interrupted; detached from job {args.job}, which goes on on the master: "
          f"follow it with ./stacks.py watch {args.job} --app-name {args.app}, or see "
          "./stacks.py status", file=sys.stderr)
    return EXIT_FAILED


def _ask_detach_or_cancel(args):
    """'detach' or 'cancel', asked on the terminal (a second Ctrl-C, or end of input: detach)."""
    sys.stderr.write(f"\nstacks.py: interrupted. Job {args.job} goes on on the master. [d]etach, or "
                     "[c]ancel it (before its next step, up to its routes)? [d/c] ")
    sys.stderr.flush()
    try:
        line = sys.stdin.readline()
    except (KeyboardInterrupt, OSError):
        return "detach"
    return "cancel" if line.strip().lower() in ("c", "cancel") else "detach"


def _cancel_on_interrupt(client, args, out):
    """Cancel the action of this run (its job), and follow it to its end to say so: one that
    waited ends refused, one that ran stops before its next step (or runs to its end after its
    routes step); a second Ctrl-C detaches."""
    print(f"stacks.py: cancelling job {args.job}", file=sys.stderr)
    try:
        args.subject = args.job
        watch_action(client, args, out, before=lambda: client.runner(
            "deploy.cancel", kwarg={"app": args.app, "job": args.job}))
    except StacksError as exc:
        print(f"stacks.py: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"stacks.py: interrupted; detached from job {args.job}: follow it with ./stacks.py watch "
              f"{args.job} --app-name {args.app}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK  # it had taken the lock meanwhile, and ran to its end


def lock_holder(lock):
    """'release 1.4 of alice since <time> (pid 123 on master)': who holds a deploy lock."""
    doing = " ".join(str(x) for x in (lock.get("action"), lock.get("version")) if x) or "an action"
    where = f" (pid {lock['pid']} on {lock.get('host') or '?'})" if lock.get("pid") else ""
    return f"{doing} of {lock.get('user') or 'unknown'} since {lock.get('since') or '?'}{where}"


def show_lock(client, args, out):
    """lock [status]: who holds the app's deploy lock. lock release: there is never a stale
    lock to release (the kernel frees it when its holder dies), so this says so: exit 0 when
    the lock is free, 1 (with the holder) when an action holds it."""
    status = client.runner("stacks.status", kwarg={"app": args.app, "observe": False})
    if isinstance(status, dict) and isinstance(status.get("refused"), str):
        raise StacksError(f"lock refused: {status['refused']}")
    entry = status.get(args.app) if isinstance(status, dict) else None
    if not isinstance(entry, dict):
        raise StacksError(f"stacks.status failed: {first_line(str(status))}")
    lock = entry.get("lock")
    if args.subject == "release":
        if lock:
            raise StacksError(f"{args.app} is locked by {lock_holder(lock)}: a running action holds it, and "
                              "it is released when that action ends, or by the kernel if its process dies; "
                              "there is no stale lock to release. Wait for it (--wait SECONDS), or stop that "
                              "process on the master", EXIT_FAILED, {"app": args.app, "lock": lock})
        out(f"{args.app} is not locked: nothing to release")
    elif lock:
        out(f"{args.app} is locked by {lock_holder(lock)}")
    else:
        out(f"{args.app} is not locked")
    return {"app": args.app, "lock": lock}


def _view(client, fun, args, **kwarg):
    answer = client.runner(fun, kwarg=dict(kwarg, app=args.app))
    if isinstance(answer, dict) and isinstance(answer.get("refused"), str):
        raise StacksError(f"{args.command} refused: {answer['refused']}")
    if not isinstance(answer, dict):
        raise StacksError(f"{fun} failed: {first_line(str(answer))}")
    return answer


def show_details(client, args, out):
    """Each container of the app as docker has it, on every minion of the app."""
    kwarg = {"version": args.version} if args.version else {}
    answer = _view(client, "stacks.details", args, **kwarg)
    containers = answer.get("containers") or []
    if not containers:
        out(f"{args.app}: no container{' of ' + args.version if args.version else ''}")
    now = time.time()
    for c in containers:
        age = _age(now - float(c.get("created") or now))
        ports = " ".join(c.get("ports") or []) or "-"
        out(f"  {c.get('name'):<32} {c.get('health'):<9} slot {c.get('slot') or '-'}  on {c.get('minion')}  "
            f"image {c.get('image')}  started {age} ago  ports {ports}")
    for line in answer.get("problems") or []:
        out(f"  PROBLEM: {line}")
    return answer


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # an app's log may hold terminal escapes
FOLLOW_EVERY = 2.0  # seconds between two asks of logs --follow
CUT = "[older lines cut]"  # stack_containers.logs' first line when it kept only the newest lines


def show_logs(client, args, out):
    """The last lines of the app's containers, each line after its container's name; with --proxy,
    HAProxy's access log of the app's slots, each line after its load balancer. With --follow,
    asked again every FOLLOW_EVERY seconds, printing only the lines that came since, until Ctrl-C
    (exit 0): a loop of this client through salt-api, since the deploy credential reaches only
    the runners."""
    kwarg = {"tail": args.tail}
    if args.version:
        kwarg["version"] = args.version
    if args.service:
        kwarg["service"] = args.service
    if args.proxy:
        kwarg["proxy"] = True
    answer = None
    try:
        answer = _view(client, "stacks.logs", args, **kwarg)
        printed, problems = _print_logs(args, answer, {}, [], out)
        if args.proxy and not any(printed.values()):
            out(f"{args.app}: no request in HAProxy's access log"
                + (f" of the slot of {args.version}" if args.version else ""))
        elif not printed:
            out(f"{args.app}: no container{' of ' + args.version if args.version else ''}")
        while args.follow:
            time.sleep(FOLLOW_EVERY)
            answer = _view(client, "stacks.logs", args, **kwarg)
            printed, problems = _print_logs(args, answer, printed, problems, out)
    except KeyboardInterrupt:
        if not args.follow:
            raise
    return answer


def _log_lines(args, answer):
    """{(minion, label): [line]} of a stacks.logs answer: each container's lines under its name,
    or with --proxy each load balancer's access log under the minion's name."""
    if args.proxy:
        return {(minion, minion): [str(line) for line in lines] for minion, lines in
                (answer.get("proxy") or {}).items() if isinstance(lines, list)}
    return {(minion, name): str(text).splitlines() for minion, containers in (answer.get("logs") or {}).items()
            for name, text in (containers or {}).items()}


def _print_logs(args, answer, before, problems_before, out):
    """Print the lines of ``answer`` that ``before`` ({(minion, label): [line]} of the previous
    answer) did not have, and its problems not already printed; return this answer's
    ({(minion, label): [line]}, problems)."""
    now = _log_lines(args, answer)
    for (minion, label), lines in sorted(now.items()):
        if (minion, label) in before:
            lines = new_lines([x for x in before[(minion, label)] if x != CUT], [x for x in lines if x != CUT])
        for line in lines:
            out(f"{label} | {CONTROL.sub('?', line)}")
    problems = [str(line) for line in answer.get("problems") or []]
    for line in problems:
        if line not in problems_before:
            out(f"PROBLEM: {line}")
    return now, problems


def new_lines(before, now):
    """The lines of ``now`` that came after ``before``: both are the last lines of a log that only
    grows (a container's, an access log), so the longest end of ``before`` that ``now`` starts
    with was printed already. Nothing in common (the log started again, or more than --tail lines
    came between two asks): all of ``now``."""
    if before:
        for size in range(min(len(before), len(now)), 0, -1):
            if now[size - 1] == before[-1] and now[:size] == before[-size:]:
                return now[size:]
    return now


def show_proxy(client, args, out):
    """Per load balancer, per slot: the version in it, its servers as HAProxy checks them, and
    its counters (sessions, responses by class, errors)."""
    answer = _view(client, "stacks.proxy", args)
    slots = answer.get("slots") or {}
    for minion, seen in sorted((answer.get("balancers") or {}).items()):
        routes = seen.get("routes") or {}
        out(f"{minion}: " + ", ".join(f"{key} -> {value}" for key, value in sorted(routes.items())))
        for slot, info in sorted(slots.items()):
            stat = (seen.get("backends") or {}).get(info.get("backend"))
            if stat is None:
                out(f"  slot {slot} ({info.get('backend')}): not in HAProxy")
                continue
            c, servers = stat.get("counters") or {}, stat.get("servers") or []
            up = sum(1 for s in servers if str(s.get("status", "")).startswith("UP"))
            named = [s for s in servers if s.get("addr")]  # a server-template slot with no address is idle
            version = f"{info.get('version')} {info.get('state')}" if info.get("version") else "empty"
            out(f"  slot {slot} ({version}): {up}/{len(named)} UP  sessions {c.get('scur', 0)} now, "
                f"{c.get('stot', 0)} in all  responses 2xx {c.get('hrsp_2xx', 0)} 4xx {c.get('hrsp_4xx', 0)} "
                f"5xx {c.get('hrsp_5xx', 0)}  errors conn {c.get('econ', 0)} resp {c.get('eresp', 0)}  "
                f"retries {c.get('wretr', 0)} redispatched {c.get('wredis', 0)}")
            for server in named:
                out(f"    {server.get('name'):<4} {server.get('addr'):<21} {server.get('status'):<6} "
                    f"check {server.get('check_status') or '-'}  sessions {server.get('scur', 0)}")
    for line in answer.get("problems") or []:
        out(f"PROBLEM: {line}")
    return answer


def _age(seconds):
    seconds = max(int(seconds), 0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def show_history(client, args, out):
    items = client.runner("stacks.history", kwarg={"app": args.app, "limit": args.limit})
    if isinstance(items, dict) and isinstance(items.get("refused"), str):
        raise StacksError(f"history refused: {items['refused']}")
    if not isinstance(items, list):
        raise StacksError(f"stacks.history failed: {first_line(str(items))}")
    for item in items:
        out(f"{item.get('when', '?')}  {item.get('action', '?'):<10} {str(item.get('version') or ''):<12} "
            f"{item.get('result', '?'):<8} {item.get('user', '?')} ({item.get('source', '?')})"
            + (f" {item['duration']} s" if item.get("duration") is not None else ""))
    return items


# what runs each command (parse_args knows no other)
COMMANDS = {
    **{action: run_action for action in ACTIONS},
    "status": show_status, "history": show_history, "details": show_details, "logs": show_logs,
    "proxy": show_proxy, "lock": show_lock, "watch": watch_action, "cancel": cancel_waiting,
    "prune": prune_images,
}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quiet = args.quiet or args.json

    def out(line):
        if not quiet:
            print(line, flush=True)

    report = None
    try:
        client = make_client(args)
        report = COMMANDS[args.command](client, args, out)
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
        if getattr(args, "job", None) and args.command in ACTIONS:
            return _on_interrupt(client, args, out)
        else:
            print("stacks.py: interrupted; the action may still run on the master: "
                  "see ./stacks.py status", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        doc = report if args.command in ACTIONS else {"ok": True, args.command: report}
        print(json.dumps(doc, indent=2, sort_keys=True))
    return EXIT_OK
