"""Errors shared across kbrec's packages."""


class CommandError(Exception):
    """A failure the user can act on: the CLI prints it as one line and exits with 2."""
