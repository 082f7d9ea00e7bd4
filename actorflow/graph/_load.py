"""Reading definitions: a dict, a JSON or YAML file, or an Amazon States Language document."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._asl import from_asl, is_asl
from ._definition import GraphDefinition, parse_definition
from ._errors import GraphValidationError, Problem
from ._executor import ExecutorRegistry

__all__ = ["load_definition", "read_document"]


def read_document(path: str | os.PathLike[str]) -> Any:
    """The JSON (or, with PyYAML installed, YAML) document in a file; syntax errors name line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read graph definition {str(p)!r}: {exc.strerror or exc}", path=str(p)) from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{p}: YAML definitions need PyYAML (pip install 'actorflow[yaml]')") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise GraphValidationError([Problem(str(p), f"not valid YAML: {exc}")], str(p)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphValidationError([Problem(str(p), f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")], str(p)) from None


def load_definition(
    source: GraphDefinition | Mapping[str, Any] | str | os.PathLike[str],
    registry: ExecutorRegistry | None = None,
) -> GraphDefinition:
    """A validated graph from a dict, a file path, or an already built `GraphDefinition` (re-checked
    against `registry`). Documents with `StartAt` and `States` are read as Amazon States Language."""
    name = "graph definition"
    if isinstance(source, GraphDefinition):
        data: Any = source.to_dict()
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        data = read_document(source)
    else:
        data = source
    if is_asl(data):
        data = from_asl(data, source=name)
    return parse_definition(data, registry, source=name)
