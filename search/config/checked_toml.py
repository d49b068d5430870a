"""Reading TOML files whose every error names the file, the key and the fix, in one line."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.errors import SetupError


class Where:
    """Formats errors that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> None:
        raise SetupError(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")

    def require(self, condition: bool, key: str, problem: str) -> None:
        if not condition:
            self.fail(key, problem)


def read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its parsed tables; a SetupError when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SetupError(f"{path}: malformed TOML ({error}); fix the syntax") from None
    except UnicodeDecodeError as error:
        raise SetupError(f"{path}: not UTF-8 text ({error}); save it as UTF-8") from None
    except OSError as error:
        raise SetupError(f"{path}: cannot read ({error}); check that it is a readable file") from None


def did_you_mean(word: str, known: Any) -> str:
    """A suggestion of the closest known word, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def reject_unknown(where: Where, prefix: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Fail on the first key of `table` that is not `known`."""
    for key in table:
        if key not in known:
            where.fail(
                f"{prefix}.{key}" if prefix else key,
                f"unknown key{did_you_mean(key, known)}; known: {', '.join(known)}",
            )


def typed(where: Where, key: str, value: Any, expected: type) -> Any:
    """`value` as `expected` (an int is a float), or fail naming the key."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        where.fail(key, f"expected {expected.__name__}, got {type(value).__name__} {value!r}; fix the value")
    return value
