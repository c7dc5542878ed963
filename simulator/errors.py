"""The one error type a user can cause: the CLI prints its message as a single line, no traceback."""


class MuprivError(Exception):
    """A problem with the user's input (config, file, record) whose message names the thing and the fix."""
