"""The multiprocTCPBase system base, with SecureTCPTransport as its transport."""

from __future__ import annotations

import functools
from typing import Any

from thespian.system.multiprocTCPBase import ActorSystemBase as _MultiprocTCPBase

from ._transport import NetParams, SecureTCPTransport

__all__ = ["SecuredTCPBase", "SystemStub"]


class SystemStub:
    """What a system base reads from its ActorSystem while it starts: the capabilities dict."""

    def __init__(self, capabilities: dict[str, Any]) -> None:
        self.capabilities = capabilities


class SecuredTCPBase(_MultiprocTCPBase):  # type: ignore[misc]
    """multiprocTCPBase whose transport (here, in the admin and in every actor) authenticates frames.

    Thespian builds the caller's transport as ``self.transportType(...)``; an instance attribute binding
    the NetParams makes that our class with our key. The admin, logger and actor processes get the
    class by ``self.transport.__class__`` and the key inside the endpoint it prepares for them."""

    def __init__(self, system: Any, logDefs: Any = None, *, net: NetParams) -> None:  # noqa: N803
        self.transportType = functools.partial(SecureTCPTransport, net=net)
        super().__init__(system, logDefs)
