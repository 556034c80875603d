"""One exception type for problems the user can fix, so the CLI prints one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""

    exit_code = 2
