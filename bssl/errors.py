"""User-facing errors: commands print them as one line and exit with code 2."""

from __future__ import annotations

import sys
from typing import Any, Callable


class UserError(Exception):
    """A mistake in the user's input (path, preset, checkpoint, value).

    The message must say what is wrong, which file or value, and what to do.
    """

    exit_code = 2


def exit_status(body: Callable[[], Any], prog: str) -> int:
    """Run a command's body: its return value is the exit status; a UserError becomes one line on stderr and
    exit code 2 instead of a traceback; Ctrl-C is 130."""
    try:
        return int(body() or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
