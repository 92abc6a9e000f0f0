"""
Facts that must live in one place, and the copies that cannot import it (the CLI is a
separate program from the master's modules): each copy is checked against its source here.
"""

import pathlib
import re
import sys

from srv_modules import load

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pigeon import cli  # noqa: E402  pylint: disable=wrong-import-position

schema = load("_utils/pigeon_schema.py", "pigeon_schema_one_source")
sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_one_source")


def test_the_actions():
    assert cli.ACTIONS == schema.ACTIONS == sm.ACTIONS


def test_the_clis_shapes_are_the_schemas():
    assert cli.APP_SHAPE.pattern in schema.APP_RE.pattern
    assert cli.VERSION_SHAPE.pattern in schema.VERSION_RE.pattern
    assert cli.MAX_WAIT == schema.MAX_WAIT


def test_no_second_copy_of_the_name_patterns_on_the_master():
    """The app pattern is pigeon_schema's alone; the version pattern has two guarded copies, the
    state machine's own guard and the minions' module's (which folders prune may remove),
    equal to the door's (test_the_version_grammar_of_the_minions_module)."""
    assert sm.VERSION_RE.pattern == schema.VERSION_RE.pattern
    for path in (REPO / "srv" / "salt").rglob("*.py"):
        if path.name == "pigeon_schema.py":
            continue
        text = path.read_text()
        assert not re.search(r"^APP_RE\s*=", text, re.M), path
        if path.name not in ("pigeon_statemachine.py", "stack_containers.py"):
            assert not re.search(r"^VERSION_RE\s*=", text, re.M), path


def test_slot_names_are_made_in_one_place():
    """'{app}_{slot}', 'pigeon-{app}-{slot}' and 'pigeon-{app}-{version}' are spelled once, in
    Python: no SLS or template of the formulas spells them."""
    for path in list((REPO / "srv" / "salt").rglob("*.sls")) + list((REPO / "srv" / "salt").rglob("*.jinja")):
        text = path.read_text()
        assert not re.search(r"'pigeon-' ~|~ '_' ~|\}\}_\{\{|pigeon-\{\{", text), path


def test_the_mark_of_a_cancelled_step():
    orchestrate = load("_utils/pigeon_orchestrate.py", "pigeon_orchestrate_one_source")
    outcome = load("_utils/pigeon_outcome.py", "pigeon_outcome_one_source")
    assert orchestrate.CANCELLED == outcome.CANCELLED


def test_the_version_grammar_of_the_minions_module():
    containers = load("_modules/stack_containers.py", "stack_containers_one_source")
    assert containers.VERSION_RE.pattern == schema.VERSION_RE.pattern
