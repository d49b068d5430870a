"""The `atelier` command line: a thin layer over the study, the store and the MLflow UI.

`main` parses (`parser.py`), runs the command (`commands.py`) and maps what stops it to an exit status.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from search.cli.parser import build_parser
from search.errors import SetupError
from search.secrets import scrub, secrets_of

EXIT_CRASH, EXIT_SETUP, EXIT_INTERRUPTED = 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `atelier` console script; no credential of a URL it was given reaches its output."""
    try:
        args = build_parser().parse_args(argv)
    except SetupError as refused:  # a bad flag: one line, not argparse's usage
        print(f"atelier: error: {scrub(str(refused))}", file=sys.stderr)
        return EXIT_SETUP
    urls = (getattr(args, "storage", None), getattr(args, "tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI"))
    secrets = [secret for url in urls for secret in secrets_of(url)]
    if getattr(args, "verbose", False):
        os.environ["ATELIER_VERBOSE"] = "1"  # read by search.backend when it imports TensorFlow
    try:
        return args.command(args)
    except SetupError as error:
        if args.debug:
            print(scrub(traceback.format_exc(), secrets), file=sys.stderr)
        print(f"atelier: error: {scrub(str(error), secrets)}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("atelier: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug or an outage nobody foresaw: its traceback, minus any credential it quotes
        print(scrub(traceback.format_exc(), secrets), file=sys.stderr)
        return EXIT_CRASH
