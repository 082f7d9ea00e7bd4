"""`python -m actorflow ...`: the same command line as the `actorflow` script."""

import sys

from ._cli import main

sys.exit(main())
