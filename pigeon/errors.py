"""
Errors of the CLI and its salt-api client: one line for a person, and the exit code.

Used by every module of the ``pigeon`` package; ``pigeon.cli.main`` prints the line
(the traceback only with ``--verbose``) and exits with the code.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API, EXIT_DEADLINE = 0, 1, 2, 3, 4


class StacksError(Exception):
    """A failure to show as one line; ``code`` is the exit code."""

    def __init__(self, message, code=EXIT_FAILED, report=None, status=None):
        super().__init__(message)
        self.code = code
        self.status = status  # the HTTP status salt-api answered, when it answered one
        self.report = report  # what is known of the action so far, for --json


def first_line(text):
    """The first non-empty line of ``text`` (an answer shown in an error)."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(empty)"
