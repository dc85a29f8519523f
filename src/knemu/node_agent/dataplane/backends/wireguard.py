"""An authenticated, encrypted overlay (``--encryption wireguard``), as Calico and flannel offer
WireGuard: pod packets between nodes travel sealed with ChaCha20-Poly1305 (RFC 8439) in UDP to
port 51820, in WireGuard's transport data message (type 4, receiver index, 64-bit counter, then
the AEAD ciphertext and its 16-byte tag), so tshark's WireGuard dissector names them.

Theory of operation.  Each node makes an X25519 key pair when its agent starts and publishes the
public key on its Node (``projectcalico.org/WireguardPublicKey``, as Calico's Felix does).  Two
nodes derive one shared secret from their static keys (X25519, RFC 7748) and, from it, one key
per direction (HKDF-SHA256, RFC 5869, over both public keys in sending order), so a frame that
opens under the key "A to B" was sealed by A: its origin is proven, whatever its underlay source
address says.  The nonce is the message's counter; a receiver keeps a sliding window of the
counters it has accepted (RFC 6479, WireGuard's 2048 frames) and drops replays.

What is simplified, and why it is still sound for an emulator: WireGuard's Noise IK handshake
(ephemeral keys every two minutes: forward secrecy, cookie replies against floods) is replaced
by static-static keys.  Keys are fresh at every agent start, so a counter never repeats under a
key; a node's old frames do not open under its new key.  Kernel WireGuard is not used because
the machines knemu runs on may lack it (checked: ``ip link add wg0 type wireguard``).

Sans-I/O: keys in, sealed bytes out; the caller owns the socket.  ``cryptography`` does the
X25519, HKDF and AEAD (OpenSSL underneath).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from knemu.node_agent.dataplane.backends.base import TRANSPORT_UDP, PeerAddress, PeerLink
from knemu.node_agent.events import DropReason

WIREGUARD_PORT = 51820  # Calico's wireguardListeningPort and WireGuard's usual port
MESSAGE_DATA = b"\x04\x00\x00\x00"  # WireGuard message type 4 (transport data), 3 reserved
HEADER_BYTES = 16  # type 4 + receiver index 4 + counter 8 (little-endian)
TAG_BYTES = 16  # Poly1305
# Outer IPv4 20 + UDP 8 + header 16 + tag 16: pod MTU 1440 on a 1500-byte underlay (Calico's
# WireGuard MTU for IPv4).
OVERHEAD_BYTES = 20 + 8 + HEADER_BYTES + TAG_BYTES
REPLAY_WINDOW = 2048  # counters behind the highest accepted one that may still arrive
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
_SALT = b"knemu wireguard v1"
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


def public_key_bytes(text: str) -> bytes:
    """The 32 bytes of a base64 X25519 public key (WireGuard's text form); ValueError says
    what is wrong with it."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"WireGuard public key {text[:60]!r} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"WireGuard public key {text[:60]!r} is {len(raw)} bytes, not 32")
    return raw


class KeyPair:
    """This node's static X25519 key pair; the private half never leaves the agent."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private = private or X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(_RAW, _RAW_PUBLIC)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()

    def shared_with(self, peer_public: bytes) -> bytes:
        """X25519 with a peer's public key; ValueError for a low-order point (all-zero
        secret, RFC 7748 section 6.1)."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def receiver_index(public: bytes) -> bytes:
    """The 4-byte receiver index a node's frames carry (WireGuard's is chosen per handshake;
    here it is derived from the receiver's key, so it needs no exchange)."""
    return hashlib.sha256(b"knemu receiver" + public).digest()[:4]


def _direction_key(shared: bytes, sender: bytes, receiver: bytes) -> ChaCha20Poly1305:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=sender + receiver)
    return ChaCha20Poly1305(hkdf.derive(shared))


@dataclass
class Session:
    """Both directions with one peer: its keys, our send counter and our replay window."""

    peer_public: bytes
    tx: ChaCha20Poly1305
    rx: ChaCha20Poly1305
    header: bytes  # MESSAGE_DATA + the peer's receiver index
    tx_counter: int = 0
    rx_highest: int = -1
    rx_window: int = 0  # bit i: counter rx_highest - i was accepted


class WireguardBackend:
    """The encryption step in place of VXLAN/IP-in-IP between nodes (as Calico routes pod
    traffic through ``wireguard.cali`` instead of its IPIP/VXLAN device when WireGuard is on)."""

    name = "wireguard"
    overhead_bytes = OVERHEAD_BYTES
    transport = TRANSPORT_UDP

    def __init__(self, keys: KeyPair, port: int = WIREGUARD_PORT) -> None:
        self.keys = keys
        self.port = port
        self.index = receiver_index(keys.public)
        self.sessions: dict[str, Session] = {}  # peer underlay IP -> session

    # -- peers -----------------------------------------------------------------------------

    def set_peer_key(self, underlay_ip: str, public_b64: str) -> None:
        """A peer's published key (empty: none, its frames are dropped and none are sent to
        it).  ValueError names what is wrong with the key.  The same key keeps its session
        (and counters); a new one starts over, as a restarted peer's new key must."""
        if not public_b64:
            self.sessions.pop(underlay_ip, None)
            return
        public = public_key_bytes(public_b64)
        old = self.sessions.get(underlay_ip)
        if old is not None and old.peer_public == public:
            return
        mine = self.keys.public
        try:
            shared = self.keys.shared_with(public)
        except ValueError:
            raise ValueError(f"WireGuard public key {public_b64!r} is a low-order point") from None
        self.sessions[underlay_ip] = Session(
            public,
            tx=_direction_key(shared, mine, public),
            rx=_direction_key(shared, public, mine),
            header=MESSAGE_DATA + receiver_index(public),
        )

    def remove_peer(self, underlay_ip: str) -> None:
        self.sessions.pop(underlay_ip, None)

    def peer_link(self, peer: PeerAddress) -> PeerLink:
        """Room for the header in front of the packet; ``seal`` fills it in."""
        return PeerLink(bytes(HEADER_BYTES), (peer.underlay_ip, self.port))

    # -- per packet ------------------------------------------------------------------------

    def seal(self, destination: tuple[str, int], buf: bytearray) -> bytes | None:
        """``buf`` is HEADER_BYTES of room then the inner packet: the message to send, or
        None when the peer has published no key (nothing can be proven to it)."""
        session = self.sessions.get(destination[0])
        if session is None:
            return None
        counter = session.tx_counter
        session.tx_counter = counter + 1
        nonce = bytes(4) + counter.to_bytes(8, "little")  # WireGuard: 32 zero bits, counter
        sealed = session.tx.encrypt(nonce, bytes(buf[HEADER_BYTES:]), None)
        return session.header + nonce[4:] + sealed

    def encapsulate(self, packet: bytes, peer: PeerAddress) -> tuple[bytes, tuple[str, int]]:
        link = self.peer_link(peer)
        sealed = self.seal(link.destination, bytearray(link.headroom + packet))
        return sealed or b"", link.destination

    def decapsulate(self, datagram: bytes, source: tuple[str, int]) -> bytes | DropReason:
        """The inner packet of a message from ``source``, or why not: no session with that
        address, a header that is not ours, a tag that does not verify (``unauthenticated``:
        not sealed by that peer), or a counter already seen (``replayed``)."""
        session = self.sessions.get(source[0])
        if session is None:
            return DropReason.NO_PEER_KEY
        if len(datagram) < HEADER_BYTES + TAG_BYTES + 20:
            return DropReason.TRUNCATED
        if datagram[:4] != MESSAGE_DATA or datagram[4:8] != self.index:
            return DropReason.UNAUTHENTICATED
        counter = int.from_bytes(datagram[8:16], "little")
        if not _fresh(session, counter):
            return DropReason.REPLAYED
        try:
            inner = session.rx.decrypt(bytes(4) + datagram[8:16], datagram[16:], None)
        except InvalidTag:
            return DropReason.UNAUTHENTICATED
        _accept(session, counter)  # only once the tag has proven the counter
        return inner

    def snapshot(self) -> dict[str, object]:
        """For ``GET /table``: our public key and the peers we hold sessions with."""
        return {
            "public_key": self.keys.public_b64,
            "port": self.port,
            "peers": {
                ip: {
                    "public_key": base64.b64encode(s.peer_public).decode(),
                    "sent": s.tx_counter,
                    "highest_received": s.rx_highest,
                }
                for ip, s in sorted(self.sessions.items())
            },
        }


def _fresh(session: Session, counter: int) -> bool:
    """Not yet accepted and not older than the window (RFC 6479)."""
    if counter > session.rx_highest:
        return True
    behind = session.rx_highest - counter
    return behind < REPLAY_WINDOW and not session.rx_window >> behind & 1


def _accept(session: Session, counter: int) -> None:
    if counter > session.rx_highest:
        shift = counter - session.rx_highest
        session.rx_window = (session.rx_window << shift | 1) & _WINDOW_MASK
        session.rx_highest = counter
    else:
        session.rx_window |= 1 << (session.rx_highest - counter)
