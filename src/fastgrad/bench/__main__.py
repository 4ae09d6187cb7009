"""``python -m fastgrad.bench``: the same as ``fastgrad bench``."""
import sys

from fastgrad.bench.cli import main

sys.exit(main())
