"""Importing the user's application for the command line: `--app pkg.module[:attr]` or `--app app.py[:attr]`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from .errors import ConfigError

__all__ = ["import_app"]


def import_app(spec: str) -> tuple[ModuleType, str]:
    """The module an `--app` spec names, imported (a file path is loaded under a private name; a
    module name is imported with the working directory on sys.path), and the `:attr` part ("" if none)."""
    mod_name, _, attr = spec.partition(":")
    if mod_name.endswith(".py") or os.sep in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.exists(path):
            raise ConfigError(f"--app {spec!r}: no such file")
        name = "_actorflow_app_" + os.path.splitext(os.path.basename(path))[0]
        loader = importlib.util.spec_from_file_location(name, path)
        if loader is None or loader.loader is None:
            raise ConfigError(f"--app {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        loader.loader.exec_module(module)
        return module, attr
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(mod_name), attr
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: cannot import {mod_name!r}: {exc}") from None
