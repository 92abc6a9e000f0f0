"""
Unit tests for ``stacks.py logs``: the containers' logs or, with --proxy, HAProxy's access log;
with --follow, asked again every FOLLOW_EVERY seconds (here without waiting), printing only the
lines that came since, until Ctrl-C (exit 0). The client is a fake with the one request
primitive of pigeon.saltapi.SaltApi (``runner``), answering from a list of runner returns.
"""

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pigeon import cli, errors  # noqa: E402  pylint: disable=wrong-import-position

URL = ["--saltapi-url", "https://salt.example:8000"]


class FakeClient:
    """Answers stacks.logs with ``answers`` one by one, then Ctrl-C (KeyboardInterrupt)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def runner(self, fun, arg=None, kwarg=None):
        self.sent.append((fun, kwarg))
        if not self.answers:
            raise KeyboardInterrupt
        return self.answers.pop(0)


@pytest.fixture
def run(monkeypatch, capsys):
    """main() with ``client`` as salt-api: (exit code, stdout lines, stderr lines)."""
    monkeypatch.setattr(cli, "FOLLOW_EVERY", 0)

    def main(client, *argv):
        monkeypatch.setattr(cli, "make_client", lambda args: client)
        code = cli.main([*argv, *URL])
        captured = capsys.readouterr()
        return code, captured.out.splitlines(), captured.err.splitlines()

    return main


def containers(**logs):
    """A stacks.logs answer of one minion's containers (app_1_4_web_1: app-1.4-web-1)."""
    names = {name: name.replace("_1_4_", "-1.4-").replace("_", "-") for name in logs}
    return {"logs": {"lab-minion": {names[name]: text for name, text in logs.items()}}, "problems": []}


T1, T2, T3, T4 = (f"2026-12-04T03:00:0{n}.000000001Z GET /{n}" for n in range(1, 5))


def test_follow_prints_each_line_once_then_ctrl_c_ends_it_with_exit_0(run):
    client = FakeClient(
        containers(app_1_4_web_1=f"{T1}\n{T2}\n", app_1_4_web_2=""),
        containers(app_1_4_web_1=f"{T1}\n{T2}\n", app_1_4_web_2=""),  # nothing new
        containers(app_1_4_web_1=f"{T2}\n{T3}\n", app_1_4_web_2=f"{T1}\n"),  # --tail 2: T1 left the window
        containers(app_1_4_web_1=f"{T3}\n{T4}\n", app_1_4_web_2=f"{T1}\n"))
    code, out, err = run(client, "logs", "-a", "app", "-f", "--tail", "2")
    assert (code, err) == (errors.EXIT_OK, [])
    assert out == [f"app-1.4-web-1 | {T1}", f"app-1.4-web-1 | {T2}", f"app-1.4-web-1 | {T3}",
                   f"app-1.4-web-2 | {T1}", f"app-1.4-web-1 | {T4}"]
    assert len(client.sent) == 5 and {fun for fun, _ in client.sent} == {"stacks.logs"}
    assert client.sent[0][1] == {"app": "app", "tail": 2}


def test_follow_of_the_proxy_log_prints_each_request_after_its_load_balancer(run):
    line = '04/Dec/2026:09:23:47.{:03} 172.18.0.1:48016 www~ app/production app_b/s1 200 0/0/0/1/1 128 ---- "GET / HTTP/1.1"'
    first, second, third = (line.format(n) for n in range(3))
    client = FakeClient({"proxy": {"lb1": [first]}, "problems": ["lb2: did not answer within 30 s"]},
                        {"proxy": {"lb1": [first, second, third]}, "problems": ["lb2: did not answer within 30 s"]})
    code, out, err = run(client, "logs", "-a", "app", "--proxy", "--follow", "-V", "1.4")
    assert (code, err) == (errors.EXIT_OK, [])
    assert out == [f"lb1 | {first}", "PROBLEM: lb2: did not answer within 30 s", f"lb1 | {second}", f"lb1 | {third}"]
    assert client.sent[0][1] == {"app": "app", "tail": 100, "version": "1.4", "proxy": True}


def test_a_log_that_started_again_is_printed_whole(run):
    """HAProxy reloaded (its ring is empty again), or more than --tail lines came between two asks."""
    client = FakeClient({"proxy": {"lb1": ["a 1", "a 2"]}, "problems": []},
                        {"proxy": {"lb1": []}, "problems": []},
                        {"proxy": {"lb1": ["b 1"]}, "problems": []})
    assert run(client, "logs", "-a", "app", "--proxy", "-f")[1] == [
        "lb1 | a 1", "lb1 | a 2", "lb1 | b 1"]


def test_lines_cut_by_the_minion_are_not_printed_again(run):
    client = FakeClient(containers(web=f"{cli.CUT}\n{T1}\n{T2}\n"), containers(web=f"{cli.CUT}\n{T2}\n{T3}\n"))
    assert run(client, "logs", "-a", "app", "-f")[1] == [f"web | {cli.CUT}", f"web | {T1}", f"web | {T2}",
                                                         f"web | {T3}"]


def test_without_follow_ctrl_c_is_still_an_interruption(run):
    code, out, err = run(FakeClient(), "logs", "-a", "app")
    assert code == errors.EXIT_FAILED and out == [] and err[0].startswith("stacks.py: interrupted")


def test_ctrl_c_before_the_first_answer_ends_follow_with_exit_0(run):
    assert run(FakeClient(), "logs", "-a", "app", "-f") == (errors.EXIT_OK, [], [])


def test_the_proxy_log_once(run):
    client = FakeClient({"proxy": {"lb1": ["x \x1b[31m y"]}, "problems": []})
    assert run(client, "logs", "-a", "app", "--proxy")[:2] == (errors.EXIT_OK, ["lb1 | x ?[31m y"])
    assert len(client.sent) == 1


@pytest.mark.parametrize("answer, said", [
    ({"proxy": {"lb1": []}, "problems": []}, "app: no request in HAProxy's access log"),
    ({"proxy": {}, "problems": []}, "app: no request in HAProxy's access log"),
])
def test_an_empty_proxy_log_says_so(run, answer, said):
    assert run(FakeClient(answer), "logs", "-a", "app", "--proxy")[1] == [said]


def test_a_refusal_ends_follow_in_one_line(run):
    client = FakeClient({"refused": "logs: app has no stack 9.9, so no slot in HAProxy; see stacks.py status "
                                    "--app-name app"})
    code, out, err = run(client, "logs", "-a", "app", "--proxy", "-f", "-V", "9.9")
    assert code == errors.EXIT_FAILED and out == []
    assert err == ["stacks.py: logs refused: logs: app has no stack 9.9, so no slot in HAProxy; see stacks.py "
                   "status --app-name app"]


@pytest.mark.parametrize("before, now, new", [
    ([], ["a", "b"], ["a", "b"]),
    (["a", "b"], ["a", "b"], []),
    (["a", "b"], ["b", "c"], ["c"]),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    (["a", "b", "a"], ["b", "a", "a"], ["a"]),
    (["x", "a", "b"], ["a", "b", "a", "b"], ["a", "b"]),
    (["a", "b"], [], []),
])
def test_new_lines_are_those_after_the_overlap(before, now, new):
    assert cli.new_lines(before, now) == new


@pytest.mark.parametrize("argv, message", [
    (["status", "-f"], "--follow applies to logs only"),
    (["details", "-a", "app", "--proxy"], "--proxy applies to logs only"),
    (["logs", "-a", "app", "--proxy", "--service", "web"], "--service does not apply to --proxy"),
    (["logs", "-a", "app", "--follow", "--json"], "--follow prints lines as they come: leave out --json"),
])
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv + URL)
    err = capsys.readouterr().err
    assert exc.value.code == errors.EXIT_USAGE and message in err and len(err.splitlines()) == 1


def test_the_help_of_logs_names_proxy_and_follow(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["logs", "--help"])
    out = capsys.readouterr().out
    assert "--proxy" in out and "--follow, -f" in out and "./stacks.py logs -a app --proxy -f" in out
