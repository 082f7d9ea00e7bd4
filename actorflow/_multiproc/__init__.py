"""The multiprocess engine: run hosts in their own processes under a Thespian admin."""

from ._facade import MultiprocRuntime

__all__ = ["MultiprocRuntime"]
