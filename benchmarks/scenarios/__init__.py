"""One module per scenario; each registers a `Scenario` with `benchmarks._harness.register` on import.

Adding a benchmark (multiprocess mode, the task queue, ...) is adding one file here: `discover()`
imports every module of this package.
"""

from __future__ import annotations

import importlib
import pkgutil

_loaded = False


def discover() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True
