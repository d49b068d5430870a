"""Where a space or objective file named on the command line lives: the working folder first, then atelier's own."""

from __future__ import annotations

from pathlib import Path

from search.config.checked_toml import did_you_mean
from search.errors import SetupError

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve(kind: str, name_or_path: str) -> Path:
    """Find `spaces/NAME.toml` (or `objectives/...`) in the working folder, then in atelier's own."""
    given = Path(name_or_path)
    if given.suffix == ".toml" or given.parent != Path("."):
        if given.is_file():
            return given
        raise SetupError(f"{kind[:-1]} file {given} does not exist; check the path")
    places = [Path.cwd() / kind, REPO_ROOT / kind]
    for folder in places:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for folder in places if folder.is_dir() for p in folder.glob("*.toml")})
    raise SetupError(
        f"unknown {kind[:-1]} '{name_or_path}'{did_you_mean(name_or_path, known)}; "
        f"choose one of: {', '.join(known) or '(none found)'}, or give a path to a .toml file"
    )
