"""`actorflow check --app MODULE [--data-dir DIR]`: would the code deployed now replay the runs in flight?

Imports the application module (as `--app` names it: `pkg.module`, `pkg.module:engine`, or a path to
a `.py` file), takes the Engine it defines (its registered workflows), and replays every unfinished
run of the data directory against them without running a step (`Engine.check`). Exit 0 when every
run replays, 7 when some would block (each listed with its evidence), 1 on other errors.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .._app import import_app
from .._engine import Engine
from ..errors import ConfigError
from ._common import data_dir_of

__all__ = ["cmd_check", "EXIT_DIVERGED", "load_engine"]

EXIT_DIVERGED = 7


def load_engine(spec: str) -> Engine:
    """The Engine an `--app` spec names: `module[:attr]` or `path.py[:attr]` (attr default: the only
    Engine the module defines)."""
    module, attr = import_app(spec)
    if attr:
        found: Any = getattr(module, attr, None)
        if not isinstance(found, Engine):
            raise ConfigError(f"--app {spec!r}: {attr!r} is not an actorflow Engine")
        return found
    engines = [v for v in vars(module).values() if isinstance(v, Engine)]
    if len(engines) != 1:
        raise ConfigError(f"--app {spec!r}: found {len(engines)} Engine objects; name one as MODULE:ATTR")
    return engines[0]


def cmd_check(args: argparse.Namespace) -> int:
    app = load_engine(args.app)
    data_dir = data_dir_of(args) if getattr(args, "data_dir", None) else (app.data_dir or data_dir_of(args))
    if not os.path.isdir(data_dir):
        raise ConfigError(f"no data directory at {data_dir}")
    checker = Engine(data_dir)
    checker._workflows, checker._names = app._workflows, app._names  # the app's registrations, this directory
    report = checker.check()
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for d in report.divergences:
            print(f"DIVERGES {d}")
        for run_id, why in report.skipped.items():
            print(f"skipped  {run_id}: {why}")
        verdict = "ok" if report.ok else f"{len(report.divergences)} run(s) would block"
        print(f"checked {report.checked} unfinished run(s) in {data_dir}: {verdict}")
    return 0 if report.ok else EXIT_DIVERGED
