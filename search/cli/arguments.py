"""argparse that refuses a bad command line in one line: the flag, what is wrong, the fix, and where the help is.

`Parser.error` raises a `SetupError` instead of printing the usage and exiting, so `main` reports a bad
flag like every other bad setup: one line, exit status 2. The flag types below name their fix in their
own complaint; argparse's own complaints get theirs from `ARGPARSE_FIXES`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn

from search.errors import SetupError

ARGPARSE_FIXES = (  # a phrase of each complaint argparse words itself, and what to do about it
    ("expected one argument", "give it a value"),
    ("expected at least one argument", "give it one value or more"),
    ("ignored explicit argument", "give it no value"),
    ("the following arguments are required", "add them"),
    ("ambiguous option", "spell the flag out"),
    ("not allowed with argument", "give one of the two"),
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose every refusal is a one-line SetupError; `atelier`'s subcommands use it too."""

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, except that an argument this parser does not know is refused here, naming this parser's
        help (argparse leaves it to the top parser, whose help does not list a subcommand's flags)."""
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            first = unknown[0]
            if first.startswith("-"):
                self.refuse(f"{first}: unknown flag", "check its spelling")
            self.refuse(f"unexpected argument {first!r}", "give every value after its flag")
        return namespace, unknown

    def error(self, message: str) -> NoReturn:
        """argparse's complaint `message` ("argument --seed: invalid int value: '1.5'; give a whole number")."""
        problem = message.removeprefix("argument ")
        self.refuse(problem, next((fix for phrase, fix in ARGPARSE_FIXES if phrase in problem), None))

    def refuse(self, problem: str, fix: str | None) -> NoReturn:
        """Stop parsing with `problem`, its `fix` (when the problem does not already say it) and this parser's help."""
        raise SetupError(f"{problem}{f'; {fix}' if fix else ''} (see {self.prog} --help)")


def whole_number(text: str) -> int:
    """A flag's whole number, as `int` reads it."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}; give a whole number") from None


def number(text: str) -> float:
    """A flag's number, as `float` reads it."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}; give a number") from None


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """A flag's type that takes one of `choices` (give the flag `choices` too: its help lists them)."""

    def choice(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r}; choose one of {', '.join(choices)}")
        return text

    return choice
