"""The frame codec, the authenticated receive buffer, and the audit that keeps the transport shim honest."""

from __future__ import annotations

import pickle
import types

import pytest
import thespian.system.transport.TCPTransport as tcp

from actorflow._net import FrameCodec, FrameRejected, NetParams, SecureTCPTransport, TransportAuditError
from actorflow._net._frames import SecureReceiveBuffer
from actorflow._net._transport import audit

KEY = b"k" * 32


def _explode() -> None:
    raise AssertionError("unpickled")  # pragma: no cover - must never be reached


class _Boom:
    """Loading this calls _explode."""

    def __reduce__(self) -> object:
        return (_explode, ())


def test_round_trip_and_tamper() -> None:
    codec = FrameCodec(KEY)
    frame = codec.frame(("addr", {"n": 1}))
    size, _, inner = frame.partition(b">")
    assert int(size) == len(inner)
    assert codec.loads(inner) == ("addr", {"n": 1})
    for i in (0, 5, 40, len(inner) - 1):  # magic, tag, body
        bad = bytearray(inner)
        bad[i] ^= 1
        with pytest.raises(FrameRejected):
            codec.loads(bytes(bad))
    with pytest.raises(FrameRejected, match="bad HMAC"):
        FrameCodec(b"x" * 32).loads(inner)
    assert "k" * 16 not in repr(codec)


def test_short_keys_refused() -> None:
    with pytest.raises(ValueError):
        FrameCodec(b"short")


def _feed(buf: SecureReceiveBuffer, data: bytes, step: int = 7) -> None:
    for i in range(0, len(data), step):
        buf.addMore(data[i : i + step])


def test_buffer_checks_before_unpickling() -> None:
    codec = FrameCodec(KEY)
    good = SecureReceiveBuffer(codec, None, "test", eager=True)
    _feed(good, codec.frame("hello"))
    assert good.isDone() and good.completed()[0] == "hello"

    body = pickle.dumps(_Boom())
    forged = b"AFH1" + b"\0" * 32 + body
    for eager in (True, False):
        buf = SecureReceiveBuffer(codec, None, "test", eager=eager)
        if eager:
            with pytest.raises(FrameRejected):
                _feed(buf, b"%d>" % len(forged) + forged)
        else:
            _feed(buf, b"%d>" % len(forged) + forged)
            assert buf.completed() is None  # an unauthenticated ACK is a corrupted ACK: retried


def test_buffer_bounds_what_an_unauthenticated_peer_can_make_it_hold() -> None:
    codec = FrameCodec(KEY, max_frame=1024)
    with pytest.raises(FrameRejected, match="too large"):
        _feed(SecureReceiveBuffer(codec, None, "t", eager=True), b"2048>" + b"x" * 10)
    with pytest.raises(FrameRejected, match="no length prefix"):
        _feed(SecureReceiveBuffer(codec, None, "t", eager=True), b"x" * 100)
    with pytest.raises(FrameRejected, match="bad length prefix"):
        _feed(SecureReceiveBuffer(codec, None, "t", eager=True), b"12ab>" + b"x" * 10)


def test_transport_without_a_key_refuses_to_build() -> None:
    plain = tcp.TCPEndpoint(None, None, None, None, False, False)
    with pytest.raises(RuntimeError, match="NetParams"):
        SecureTCPTransport(plain)


def test_net_params_repr_hides_the_key() -> None:
    assert "kkkk" not in repr(NetParams(key=KEY))


def _module_with(extra: str) -> types.ModuleType:
    """A copy of Thespian's TCP transport module with one more method on TCPTransport."""
    mod = types.ModuleType(tcp.__name__)
    mod.__dict__.update(vars(tcp))
    code = compile(extra, tcp.__file__, "exec")
    ns: dict[str, object] = {}
    exec(code, mod.__dict__, ns)
    cls = type("TCPTransport", (tcp.TCPTransport,), {"__module__": tcp.__name__, **ns})
    mod.TCPTransport = cls  # type: ignore[attr-defined]
    return mod


def test_audit_passes_on_this_thespian_and_refuses_a_new_unpickling_path() -> None:
    audit(tcp)
    with pytest.raises(TransportAuditError, match="_sneaky"):
        audit(_module_with("def _sneaky(self, data):\n    return pickle.loads(data)\n"))
    with pytest.raises(TransportAuditError, match="_listen_more"):
        audit(_module_with("def _listen_more(self, s):\n    s.listen(5)\n"))
    with pytest.raises(TransportAuditError, match="_plain"):
        audit(_module_with("def _plain(self):\n    return TCPIncoming(None, None)\n"))


def test_a_status_reply_holding_a_local_address_still_crosses() -> None:
    """An admin that failed to create an actor lists that child's ChildActorExited, from a local address
    with no network translation, in its status replies; Thespian could not pickle them, so every status
    request timed out. The transport sends such a reply with those addresses as their names."""
    from thespian.actors import ActorAddress
    from thespian.system.addressManager import ActorAddressManager, CannotPickleAddress
    from thespian.system.messages.status import Thespian_SystemStatus
    from thespian.system.transport.IPBase import TCPv4ActorAddress

    from actorflow._net._admin_fixes import portable_status

    admin = ActorAddress(TCPv4ActorAddress("127.0.0.1", 1900, external=True))
    local = ActorAddressManager(admin, admin).createLocalAddress()
    status = Thespian_SystemStatus(admin, capabilities={"actorflow.worker": True})
    status.addReceivedMessage(local, admin, "ChildActorExited:" + str(local))
    status.addChild(admin)
    with pytest.raises(CannotPickleAddress):
        pickle.dumps(status)
    codec = FrameCodec(KEY)
    _, _, inner = codec.frame(("me", portable_status(status))).partition(b">")
    _, got = codec.loads(inner)
    assert isinstance(got, Thespian_SystemStatus) and got.capabilities == {"actorflow.worker": True}
    assert got.receivedMessages == [(str(local), admin, "ChildActorExited:" + str(local))]
    assert got.childActors == [admin] and got.adminAddress == admin
