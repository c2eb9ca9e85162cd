#!/usr/bin/env python
"""`make bench`: normlab's training throughput next to plain reference loops, side by side.

The benchmark lives in normlab.bench (`python -m normlab.bench` is the same command); see
`python scripts/bench.py --help` for its cases and options.
"""

import sys

from normlab.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
