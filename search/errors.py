"""The one error type that stops atelier at once: a bad setup, told in one line."""

from __future__ import annotations


class SetupError(Exception):
    """A problem with what the user asked for (a file, a flag, the data, a store).

    Its message is one line that names the problem and the fix. The command line prints it
    and exits with status 2; nothing else catches it, so a search never records it as a
    failed trial.
    """
