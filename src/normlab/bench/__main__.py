"""`python -m normlab.bench`: the benchmark's command line (normlab.bench.cli)."""

import sys

from normlab.bench.cli import main

sys.exit(main(prog="python -m normlab.bench"))
