"""actorflow: durable workflows and background tasks on the actor model."""

from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

__all__ = [*_errors_all]
