"""`python -m search.cli`: the `atelier` command without its console script."""

import sys

from search.cli import main

sys.exit(main())
