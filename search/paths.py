"""Folders the user names for atelier to write in, checked before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from search.errors import SetupError


def check_output_folder(folder: Path, flag: str = "--output") -> None:
    """Refuse a folder that is a file, lies under a file, or cannot be written (it is made later if missing)."""
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
