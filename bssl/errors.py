"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input (path, preset, checkpoint, value).

    The message must say what is wrong, which file or value, and what to do.
    """

    exit_code = 2
