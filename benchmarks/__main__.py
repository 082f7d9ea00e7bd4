"""`python -m benchmarks [scenario ...] [--peer dbos|huey|dramatiq ...] [--quick] [--repeat N]` — see benchmarks/_harness.py."""

import sys

import actorflow  # noqa: F401  (import order: storage imported first alone hits an import cycle)

from ._harness import main

if __name__ == "__main__":
    sys.exit(main())
