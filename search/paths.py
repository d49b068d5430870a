"""Folders the user names for atelier to write in, checked before anything is written."""

from __future__ import annotations

import os
import re
from pathlib import Path

from search.errors import SetupError

NAME_MAX = 100  # characters in a study or model name
PART_MAX = 255  # characters in one part of a path (the usual file-system limit)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_output_folder(folder: Path, flag: str = "--output") -> None:
    """Refuse a folder with control characters or an over-long part, one that is a file or lies under a file,
    or one that cannot be written (it is made later if missing)."""
    if CONTROL.search(str(folder)) or any(len(part) > PART_MAX for part in folder.parts):
        shown = str(folder).encode("unicode_escape").decode("ascii")[:200]
        raise SetupError(
            f"{flag} '{shown}' holds control characters or a part over {PART_MAX} characters; give a plain path"
        )
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise SetupError(
            f"report folder {folder}: {existing} is a file, not a folder; "
            f"pass {flag} with a folder (it is made if missing)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SetupError(
            f"report folder {folder}: cannot write in {existing}; pass {flag} with a folder you can write to"
        )


def check_name(name: str, flag: str) -> str:
    """`name`, if it can safely become a folder and an MLflow name; otherwise a SetupError naming the flag.

    A study's name becomes an experiment and a folder under the store's artifacts, a model's a registry
    entry: neither may leave its place, so path separators, `..`, control characters and names longer than
    `NAME_MAX` are refused.
    """
    shown = name.encode("unicode_escape").decode("ascii")[: NAME_MAX + 20]
    if not name.strip():
        problem = "is empty"
    elif CONTROL.search(name):
        problem = "holds control characters"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif ".." in name:
        problem = "holds '..'"
    elif len(name) > NAME_MAX:
        problem = f"is {len(name)} characters long"
    else:
        return name
    raise SetupError(
        f"{flag} '{shown}' {problem}; give a name of letters, digits, '-', '_' and '.' of at most {NAME_MAX} characters"
    )
