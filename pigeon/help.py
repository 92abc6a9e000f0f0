"""
The help of each command of ``./stacks.py`` (``./stacks.py release --help``): what it
does, its options with their defaults, and two examples. Used by ``pigeon.cli``;
``./stacks.py --help`` (every option) is argparse's.
"""

# each command's own help (./stacks.py ACTION --help): what it does, its options, two examples
COMMON = "  --wait SECONDS, --dry-run, --expect-revision N, --json, --quiet, --no-progress, --deadline SECONDS"
COMMANDS = {
    "release": ("Start VERSION of APP in a free slot. Internal and preview traffic reach it once every "
                "container is healthy and UP in HAProxy; production is untouched.",
                ["  --app-name APP, -a APP   required: a key of the stacks: pillar",
                 "  --version V, -V V        default: stacks:<app>:version of the pillar",
                 "  --keep-failed            leave a failed release's containers for a look (default: removed)",
                 COMMON],
                ["./stacks.py release -a app -V 1.4", "./stacks.py release -a app -V 1.4 --wait 60 --keep-failed"]),
    "activate": ("Give production to the released stack, at runtime; the active one becomes inactive "
                 "(kept for rollback), the old inactive one goes.",
                 ["  --app-name APP, -a APP   required",
                  "  --version V, -V V        default: the released stack's version",
                  "  --bake SECONDS           watch the new slot (5xx, health checks, response time) and roll "
                  "back by itself on a breach, exit 1 (default: stacks:<app>:bake:seconds, else none)", COMMON],
                 ["./stacks.py activate -a app", "./stacks.py activate -a app -V 1.4 --bake 60"]),
    "rollback": ("Give production back to the inactive stack; the active one becomes inactive.",
                 ["  --app-name APP, -a APP   required", COMMON],
                 ["./stacks.py rollback -a app", "./stacks.py rollback -a app --dry-run"]),
    "deactivate": ("Remove a stack: traffic leaves it, its servers drain, its containers stop gracefully "
                   "and go. The active stack only with --force (production then answers 503).",
                   ["  --app-name APP, -a APP   required", "  --version V, -V V        required",
                    "  --force                  allow removing the active stack (default: refused)", COMMON],
                   ["./stacks.py deactivate -a app -V 1.3", "./stacks.py deactivate -a app -V 1.4 --force"]),
    "repair": ("Bring what runs back to what the registry says, gated like a release: HAProxy on the "
               "load balancer, each stack's containers (stopped ones started, missing ones created from "
               "the pillar, those of versions the registry does not know removed), healthy and UP, then "
               "the registry's routes set again. The registry does not change.",
               ["  --app-name APP, -a APP   required",
                "  --version V, -V V        default: every stack of the app", COMMON],
               ["./stacks.py repair -a app", "./stacks.py repair -a app --dry-run"]),
    "canary": ("Send a share of production to the released stack, the rest to the active one, at runtime; "
               "each client stays on its side (the cookie pigeon_bucket). Refused unless every server of the "
               "release is UP. Change the share in steps; activate completes it, abort or rollback ends it.",
               ["  --app-name APP, -a APP   required",
                "  --percent N              required: the release's share of production, 0-100 (0 ends it)",
                "  --version V, -V V        default: the released stack's version", COMMON],
               ["./stacks.py canary -a app --percent 10", "./stacks.py canary -a app --percent 50 --expect-revision 12"]),
    "abort": ("End a canary: production all on the active stack again; the release keeps internal and preview "
              "traffic.",
              ["  --app-name APP, -a APP   required", COMMON],
              ["./stacks.py abort -a app", "./stacks.py abort -a app --dry-run"]),
    "maintenance": ("Maintenance on or off: production answers 503 with the message and a Retry-After, at "
                    "runtime, while internal and preview traffic still reach the stacks. Kept in the registry "
                    "(status shows it) and across HAProxy's reloads and restarts.",
                    ["  on | off                 required",
                     "  --app-name APP, -a APP   required",
                     "  --message TEXT           on: one line, at most 200 characters (default: down for "
                     "maintenance, try again later)",
                     "  --retry-after SECONDS    on: default 300", COMMON],
                    ["./stacks.py maintenance on -a app --message 'Back at 18:00'",
                     "./stacks.py maintenance off -a app"]),
    "status": ("Per app: each stack's version, state, slot and traffic, the routes, the lock, and what "
               "really runs, with the drift from the registry.",
               ["  --app-name APP, -a APP   default: every app of the registry and the pillar",
                "  --json                   one JSON document"],
               ["./stacks.py status", "./stacks.py status -a app --json"]),
    "history": ("The last actions on an app, oldest first: who, when, what, the result and why.",
                ["  --app-name APP, -a APP   required", "  --limit N                default: 20 (0: all, at most 500)",
                 "  --json                   one JSON document"],
                ["./stacks.py history -a app", "./stacks.py history -a app --limit 100 --json"]),
    "details": ("Each container of the app as docker has it, on every minion of its config.target: "
                "name, health, slot, minion, image, how long ago it started, published ports.",
                ["  --app-name APP, -a APP   required", "  --version V, -V V        default: every version",
                 "  --json                   one JSON document"],
                ["./stacks.py details -a app", "./stacks.py details -a app -V 1.4 --json"]),
    "logs": ("The last lines of the app's containers (time-stamped by docker), each line after its "
             "container's name, from every minion of its config.target. With --proxy, HAProxy's access "
             "log of the app's slots instead (one request a line: date, client, frontend, route, "
             "backend/server, status, timers, bytes), each line after its load balancer.",
             ["  --app-name APP, -a APP   required",
              "  --version V, -V V        default: every version (--proxy: that version's slot)",
              "  --service S              default: every service (not with --proxy)",
              "  --tail N                 default: 100 lines a container or load balancer (1-10000)",
              "  --proxy                  default: the containers' logs",
              "  --follow, -f             then print new lines as they come (every 2 s) until Ctrl-C "
              "(default: once)",
              "  --json                   one JSON document (not with --follow)"],
             ["./stacks.py logs -a app -V 1.4 --service web --tail 20", "./stacks.py logs -a app --proxy -f"]),
    "proxy": ("What HAProxy says of the app on each load balancer: the routes, and per slot the version "
              "in it, its servers (address, UP/DOWN, last check, sessions) and its counters (sessions, "
              "responses by class, connection and response errors, retries).",
              ["  --app-name APP, -a APP   required", "  --json                   one JSON document"],
              ["./stacks.py proxy -a app", "./stacks.py proxy -a app --json"]),
    "cancel": ("Stop the actions of APP, or only job JOB: one that waits for the deploy lock (--wait) "
               "ends refused and nothing of it runs; the one that holds the lock stops before its next "
               "step, up to its routes step (a release's cleanup then removes what it started), and runs "
               "to its end once its routes step ran. Ctrl-C on an action asks whether to detach or cancel.",
               ["  --app-name APP, -a APP   required",
                "  JOB                      default: every action of the app (the job id an action printed)"],
               ["./stacks.py cancel -a app", "./stacks.py cancel 20261204031000123456 -a app"]),
    "prune": ("Remove, on the app's minions, the images of its versions that no stack uses (and their "
              "build folders, with config:build_dir in the pillar). Kept: the "
              "versions in the registry, images a container uses, and the N newest other versions. "
              "Refused while an action holds the app's lock; recorded in the history.",
              ["  --app-name APP, -a APP   required", "  --keep N                 default: 3 (0-100)",
               "  --dry-run                list what would go, remove nothing"],
              ["./stacks.py prune -a app --dry-run", "./stacks.py prune -a app --keep 1"]),
    "lock": ("Who holds the app's deploy lock (lock status, the default). lock release says there is "
             "nothing stale to release: the lock is freed when its action ends, or by the kernel when "
             "its process dies; it exits 1 with the holder while an action runs.",
             ["  --app-name APP, -a APP   required", "  --json                   one JSON document"],
             ["./stacks.py lock -a app", "./stacks.py lock release -a app"]),
    "watch": ("Follow an action started elsewhere, by the job id it printed, to its end: its outcome as "
              "the action itself prints it (exit 1 when it failed). When it already ended, its "
              "entry in the history.",
              ["  JOB                      the job id (20 digits) on the action's first line",
               "  --app-name APP, -a APP   required", "  --json                   one JSON document"],
              ["./stacks.py watch 20261204031000123456 -a app", "./stacks.py watch 20261204031000123456 -a app --json"]),
}


def command_help(command):
    """The help of one command, as lines."""
    what, options, examples = COMMANDS[command]
    return ([f"usage: stacks.py {command} [options]", "", what, "", "options:"] + options
            + ["", "examples:"] + [f"  {e}" for e in examples]
            + ["", "Every option: ./stacks.py --help. Settings: SALTAPI_URL, SALTAPI_USER, SALTAPI_PASS "
                   "(see docs/cli.md)."])
