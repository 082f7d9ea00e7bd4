"""Thespian's TCP transport with authenticated frames and a chosen listen address, in every process.

Thespian starts the admin, its logger and every actor process itself and hands each one the transport
*class* and an endpoint object as arguments of the new process (``startAdmin``, ``startChild``,
``startupASLogger``: ``transportClass(endpoint)``). With ``spawn`` those arguments are unpickled in a
fresh interpreter, which imports this module to find the class; with ``fork`` they are inherited. So
the class is the hook: ``SecureTCPTransport`` is the only transport class an actorflow system ever names,
and the endpoint it prepares for a child (``SecureTCPEndpoint``) carries the key and listen address. A
transport built without them raises instead of falling back to plain pickle: it fails closed.

The transport reuses Thespian's own code. The few methods that reach the wire's (de)serializer, the ACK
constants, the receive buffers or the listening socket are run with a namespace in which those names are
ours (``_rebound``), so Thespian's logic is unchanged and only the dangerous primitives are swapped.
``audit()`` checks, at import, that no other function of Thespian's TCP transport module reaches those
names; a Thespian release that does (a new code path that unpickles) makes the import fail rather
than run unauthenticated.
"""

from __future__ import annotations

import dis
import socket
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import thespian.system.transport.TCPTransport as _tcp
from thespian.actors import ActorAddress
from thespian.system.addressManager import CannotPickleAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from ._admin_fixes import STATUS_TYPES, forget_failed_creations, portable_status
from ._frames import DEFAULT_MAX_FRAME, FrameCodec, SecureReceiveBuffer
from ._procs import disable_inherited_listeners, redirect_stdio

__all__ = ["NetParams", "SecureTCPEndpoint", "SecureTCPTransport", "audit", "TransportAuditError"]

ANY_HOSTS = ("0.0.0.0", "")


@dataclass(frozen=True)
class NetParams:
    """What every process of one actor system shares: the frame key and where sockets listen."""

    key: bytes = field(repr=False)
    bind: str = "127.0.0.1"
    max_frame: int = DEFAULT_MAX_FRAME
    daemon_log: str | None = None  # the admin's stdout/stderr go here instead of its starter's

    @property
    def advertise(self) -> str | None:
        """Host put in actor addresses; None lets Thespian pick its outward address (bind to all)."""
        return None if self.bind in ANY_HOSTS else self.bind


class SecureTCPEndpoint(_tcp.TCPEndpoint):  # type: ignore[misc]
    """Thespian's child endpoint plus the NetParams the child's transport needs."""

    def __init__(self, net: NetParams, *args: Any) -> None:
        super().__init__(*args)
        self.net = net

    def __repr__(self) -> str:
        return f"SecureTCPEndpoint({self.args!r}, bind={self.net.bind!r})"


class _BoundSocket(socket.socket):
    """A listening socket that binds the configured host whatever address Thespian asks for."""

    bind_host = "127.0.0.1"

    def bind(self, address: Any) -> None:
        super().bind((self.bind_host, address[1]))


class _SocketModule:
    """Stands in for the `socket` module inside Thespian's transport __init__ (only `socket()` differs)."""

    def __init__(self, host: str) -> None:
        self._cls = type("_BoundSocket", (_BoundSocket,), {"bind_host": host})

    def socket(self, *args: Any, **kw: Any) -> socket.socket:
        sock: socket.socket = self._cls(*args, **kw)
        return sock

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


# Thespian functions run with our names (see _namespace) and the names each may reach.
_REBOUND: dict[str, frozenset[str]] = {
    # __init__ also reads TCPTransport.getAdminAddr; SecureTCPTransport.__init__ replaces the result.
    "__init__": frozenset({"socket", "TCPv4ActorAddress", "TCPTransport"}),
    "_next_XMIT_3": frozenset({"ReceiveBuffer", "serializer"}),
    "_check_XMIT_4_done": frozenset({"ReceiveBuffer", "serializer", "TCPIncomingPersistent"}),
    "_queue_intent_extra": frozenset({"TCPIncomingPersistent"}),
    "_acceptNewIncoming": frozenset({"TCPIncoming", "TCPIncomingPersistent"}),
    "_addedDataToIncoming": frozenset({"TCPIncomingPersistent", "ackMsg", "ackDataErrMsg"}),
    # data that arrives on a kept-open outgoing socket is read here
    "_runWithExpiry": frozenset({"TCPIncomingPersistent", "TCPTransport"}),
}
# Global names through which Thespian's TCP module reaches pickle, the wire buffers or a new transport,
# and attribute names that open a listener or deserialize.
_SENSITIVE_GLOBALS = frozenset(
    {"pickle", "serializer", "ReceiveBuffer", "toSendBuffer", "ackMsg", "ackDataErrMsg",
     "TCPIncoming", "TCPIncomingPersistent", "TCPTransport"}
)
_SENSITIVE_ATTRS = frozenset({"listen", "bind", "loads", "load"})
# Functions that reach a sensitive name and why that is safe.
_SAFE = {
    "TCPTransport.serializer": "overridden by SecureTCPTransport.serializer",
    "TCPTransport.external_transport_clone": "overridden by SecureTCPTransport.external_transport_clone",
    "TCPTransport.getAdminAddr": "overridden by SecureTCPTransport.getAdminAddr",
    "TCPTransport.getConventionAddress": "parses an address string; no socket, no pickle",
    "TCPTransport.probeAdmin": "binds a throwaway socket to test the port; never listens",
    "TCPTransport.deadAddress": "calls the base class through super(TCPTransport, ...)",
    "TCPTransport._finishIncoming": "only isinstance(..., TCPIncomingPersistent)",
    "TCPTransport._waitForSendable": "reads a class constant",
    "TCPIncoming_Common.__init__": "its pickle default is unreachable: ours always pass a SecureReceiveBuffer",
}


class TransportAuditError(RuntimeError):
    """Thespian's TCP transport reaches pickle or a listening socket where this shim cannot see it."""


def _functions(namespace: dict[str, Any], module: str) -> dict[str, types.FunctionType]:
    found: dict[str, types.FunctionType] = {}
    for name, obj in namespace.items():
        if isinstance(obj, types.FunctionType) and obj.__module__ == module:
            found[name] = obj
        elif isinstance(obj, type) and obj.__module__ == module:
            for attr, member in vars(obj).items():
                fn = member.__func__ if isinstance(member, staticmethod | classmethod) else member
                if isinstance(fn, property):
                    fn = fn.fget
                if isinstance(fn, types.FunctionType):
                    found[f"{name}.{attr}"] = fn
    return found


def _names(code: types.CodeType) -> set[str]:
    """Sensitive globals and attributes one function (nested code included) reaches."""
    names: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval in _SENSITIVE_GLOBALS:
            names.add(ins.argval)
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and ins.argval in _SENSITIVE_ATTRS:
            names.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def audit(module: types.ModuleType = _tcp) -> None:
    """Refuse a Thespian whose TCP transport reaches pickle or a listener outside the rebound methods."""
    problems: list[str] = []
    for qualname, fn in _functions(vars(module), module.__name__).items():
        reached = _names(fn.__code__)
        if not reached or qualname in _SAFE:
            continue
        method = qualname.removeprefix("TCPTransport.")
        allowed = _REBOUND.get(method) if qualname.startswith("TCPTransport.") else None
        if allowed is None or not reached <= allowed | {"bind", "listen", "loads"}:
            problems.append(f"{qualname} reaches {sorted(reached)}")
    if problems:
        raise TransportAuditError(
            "thespian's TCP transport changed in ways actorflow's frame authentication has not been "
            "checked against; refusing to run it: " + "; ".join(problems)
        )


audit()


def _rebound(fn: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    return types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)


class SecureTCPTransport(_tcp.TCPTransport):  # type: ignore[misc]
    """TCPTransport whose frames carry an HMAC and whose listening socket binds `NetParams.bind`."""

    def __init__(self, initType: Any, *args: Any, net: NetParams | None = None) -> None:  # noqa: N803
        if net is None:
            net = getattr(initType, "net", None)
        if not isinstance(net, NetParams):
            # A transport without a key would have to speak plain pickle: refuse instead.
            raise RuntimeError(
                "SecureTCPTransport needs the system's NetParams (a SecureTCPEndpoint or net=); "
                f"got {type(initType).__name__}"
            )
        self._net = net
        self._codec = FrameCodec(net.key, net.max_frame)
        ns = self._namespace()
        init: Callable[..., None] = _rebound(_tcp.TCPTransport.__init__, ns)
        init(self, initType, *args)
        for name in _REBOUND:
            if name != "__init__":
                setattr(self, name, types.MethodType(_rebound(getattr(_tcp.TCPTransport, name), ns), self))
        if isinstance(initType, _tcp.ExternalInterfaceTransportInit):
            self._adminAddr = self.getAdminAddr(args[0])
        elif isinstance(initType, SecureTCPEndpoint):  # in a process Thespian started for us
            disable_inherited_listeners(keep=self.socket.fileno())
            if initType.args[1] is not None:  # an assigned address: the admin
                from thespian.system.multiprocCommon import MultiProcAdmin

                forget_failed_creations(MultiProcAdmin)
                if net.daemon_log:
                    redirect_stdio(net.daemon_log)

    def _namespace(self) -> dict[str, Any]:
        codec, local = self._codec, self

        def buffer(sock: socket.socket | None, eager: bool) -> SecureReceiveBuffer:
            return SecureReceiveBuffer(codec, sock, lambda: str(getattr(local, "myAddress", "?")), eager)

        def incoming(base: Any) -> type:
            def __init__(inc: Any, rmtAddr: Any, baseSock: Any, rcvBuf: Any = None) -> None:  # noqa: N803
                base.__init__(inc, rmtAddr, baseSock, rcvBuf or buffer(baseSock, eager=True))

            return type(base.__name__, (base,), {"__init__": __init__})

        class _AckBuffers:
            """`ReceiveBuffer(serializer.loads)` in the ACK wait path: a non-eager secure buffer."""

            def __call__(self, _loads: Any) -> SecureReceiveBuffer:
                return buffer(None, eager=False)

        host = self._net.advertise

        def address(ip: Any = None, port: int = 0, external: Any = False) -> Any:
            return TCPv4ActorAddress(ip if ip is not None else host, port, external)

        ns = dict(vars(_tcp))
        ns.update(
            serializer=types.SimpleNamespace(loads=None, dumps=codec.dumps),
            ReceiveBuffer=_AckBuffers(),
            TCPIncoming=incoming(_tcp.TCPIncoming),
            TCPIncomingPersistent=incoming(_tcp.TCPIncomingPersistent),
            ackMsg=codec.frame(_tcp.ackPacket),
            ackDataErrMsg=codec.frame("ACK+DATAERR"),
            socket=_SocketModule(self._net.bind or "0.0.0.0"),
            TCPv4ActorAddress=address,
        )
        return ns

    # -- overrides of methods that name the module's serializer or class -----------------------------

    def serializer(self, intent: Any) -> bytes:
        try:
            return self._codec.frame((self.myAddress, intent.message))
        except CannotPickleAddress:
            if not isinstance(intent.message, STATUS_TYPES):
                raise
            return self._codec.frame((self.myAddress, portable_status(intent.message)))

    def external_transport_clone(self) -> SecureTCPTransport:
        return SecureTCPTransport(
            _tcp.ExternalTransportCopy(),
            self._adminAddr,
            self.txOnly,
            isinstance(self.myAddress.addressDetails, _tcp.RoutedTCPv4ActorAddress),
            net=self._net,
        )

    def prepEndpoint(self, assignedLocalAddr: Any, capabilities: Any) -> SecureTCPEndpoint:  # noqa: N802,N803
        plain = super().prepEndpoint(assignedLocalAddr, capabilities)
        return SecureTCPEndpoint(self._net, *plain.args)

    def getAdminAddr(self, capabilities: dict[str, Any]) -> Any:  # noqa: N802 - Thespian's name
        """The admin's address, on the advertised host (Thespian would pick its outward address)."""
        if self._net.advertise is None:
            return _tcp.TCPTransport.getAdminAddr(capabilities)
        port = capabilities.get("Admin Port", _tcp.DEFAULT_ADMIN_PORT)
        return ActorAddress(TCPv4ActorAddress(self._net.advertise, port, external=True))
