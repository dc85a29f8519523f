"""Userspace conntrack for kube-proxy's NAT: one entry per translated flow, two keyed halves.

Theory of operation.  Like Linux's nf_conntrack (which kube-proxy's iptables and IPVS modes rely
on), an entry remembers the ORIGINAL tuple of a flow's first packet and the REPLY tuple that
packets coming back will carry after the translation.  Both are 12-byte keys laid out exactly as
the packet has them (src ip, dst ip, src port, dst port), so the router builds a key with one
slice of the packet.  Each key maps to a ``CtHalf`` that says what to write into the packet (the
8 address bytes and 4 port bytes) and the precomputed RFC 1624 checksum deltas for the IP header
and for the TCP/UDP checksum (the pseudo-header covers the addresses), so a translated packet
costs two slice assignments and two additions.

Timeouts follow Linux's defaults as kube-proxy configures them: TCP established 86400 s
(kube-proxy ``--conntrack-tcp-timeout-established``), unanswered SYN 120 s, after a FIN 120 s
(TIME_WAIT), after a RST 10 s (CLOSE); UDP 30 s (``nf_conntrack_udp_timeout``).  Entries idle for
longer are ignored at lookup and removed by ``expire``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from knemu.proto.wire import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, bytes_to_ip, checksum, word_delta

# TCP conntrack states (a subset of nf_conntrack_proto_tcp's, enough to pick timeouts).
SYN_SENT = "SYN_SENT"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT = "FIN_WAIT"
CLOSE = "CLOSE"
UDP = "UDP"
_SYN_ACK = TCP_SYN | TCP_ACK


@dataclass(frozen=True)
class CtTimeouts:
    tcp_syn_sent_s: float = 120.0
    tcp_established_s: float = 86400.0
    tcp_fin_s: float = 120.0
    tcp_close_s: float = 10.0
    udp_s: float = 30.0


class CtEntry:
    """One translated flow.  ``backend_key`` is proto byte + backend ip + port."""

    __slots__ = (
        "backend_key",
        "dead",
        "fwd",
        "last_seen",
        "orig",
        "proto",
        "replied",
        "rev",
        "service",
        "state",
        "timeout",
    )

    def __init__(self, proto: int, orig: bytes, service: str, backend_key: bytes) -> None:
        self.proto = proto
        self.orig = orig
        self.service = service
        self.backend_key = backend_key
        self.fwd: CtHalf
        self.rev: CtHalf
        self.state = UDP
        self.timeout = 0.0
        self.last_seen = 0.0
        self.replied = False
        self.dead = False  # its backend left the service: the next client packet gets a RST

    def to_dict(self) -> dict[str, object]:
        o, r = self.orig, self.rev.key
        return {
            "protocol": {6: "TCP", 17: "UDP"}.get(self.proto, str(self.proto)),
            "original": _tuple_dict(o),
            "reply": _tuple_dict(r),
            "service": self.service,
            "state": self.state,
            "replied": self.replied,
            "dead": self.dead,
            "last_seen": self.last_seen,
            "timeout_s": self.timeout,
        }


class CtHalf:
    """One direction of an entry: the key packets carry, and what to rewrite them to."""

    __slots__ = ("addrs", "entry", "ip_delta", "key", "l4_delta", "ports", "reply")

    def __init__(self, entry: CtEntry, key: bytes, new: bytes, reply: bool) -> None:
        self.entry = entry
        self.key = key
        self.reply = reply
        self.addrs = new[:8]  # new src ip + dst ip
        self.ports = new[8:12]  # new src port + dst port
        # RFC 1624: the IP header checksum covers the addresses; TCP/UDP's covers them through
        # the pseudo-header, and the ports.
        self.ip_delta = word_delta(key[:8], self.addrs)
        self.l4_delta = word_delta(key, new)


def tcp_transition(state: str, flags: int, reply: bool, t: CtTimeouts) -> tuple[str, float] | None:
    """The next (state, timeout) of a TCP flow after a segment with ``flags`` in the original
    (``reply`` False) or reply direction, or None when nothing changes (nf_conntrack_proto_tcp,
    simplified).  Shared by the NAT table and the network-policy connection table."""
    if flags & TCP_RST:
        return CLOSE, t.tcp_close_s
    if flags & TCP_FIN:
        return FIN_WAIT, t.tcp_fin_s
    if reply and state == SYN_SENT:  # SYN-ACK (or a simultaneous open's SYN)
        return ESTABLISHED, t.tcp_established_s
    if flags & _SYN_ACK == TCP_SYN and not reply and state in (FIN_WAIT, CLOSE):
        # A new connection reusing the tuple (TIME_WAIT reuse): track it afresh.
        return SYN_SENT, t.tcp_syn_sent_s
    return None


def _tuple_dict(key: bytes) -> dict[str, object]:
    return {
        "src": bytes_to_ip(key[0:4]),
        "dst": bytes_to_ip(key[4:8]),
        "sport": int.from_bytes(key[8:10], "big"),
        "dport": int.from_bytes(key[10:12], "big"),
    }


def reverse(key: bytes) -> bytes:
    """The tuple of a packet going the other way: swap addresses and ports."""
    return key[4:8] + key[0:4] + key[10:12] + key[8:10]


class Conntrack:
    """Tables per protocol of ``CtHalf`` by key, plus an index of entries by backend."""

    def __init__(self, timeouts: CtTimeouts | None = None) -> None:
        self.timeouts = timeouts or CtTimeouts()
        self.tables: dict[int, dict[bytes, CtHalf]] = {6: {}, 17: {}}
        self.by_backend: dict[bytes, set[CtEntry]] = {}
        self._deadline: float | None = None

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values()) // 2

    def active(self, backend_key: bytes) -> int:
        """Entries using a backend (IPVS ``lc`` counts these as active connections)."""
        entries = self.by_backend.get(backend_key)
        return len(entries) if entries else 0

    def lookup(self, proto: int, key: bytes, now: float) -> CtHalf | None:
        """The half matching a packet's key, or None (also for an entry idle too long)."""
        table = self.tables.get(proto)
        if table is None:
            return None
        half = table.get(key)
        if half is not None and now - half.entry.last_seen > half.entry.timeout:
            self.remove(half.entry)
            return None
        return half

    def create(
        self, proto: int, orig: bytes, translated: bytes, service: str, now: float, syn: bool
    ) -> CtEntry | None:
        """Track a new flow whose first packet had ``orig`` and leaves as ``translated``.
        None when the reply tuple is already taken (the caller refuses the flow)."""
        table = self.tables[proto]
        reply_key = reverse(translated)
        if orig in table or reply_key in table:
            return None
        backend_key = bytes((proto,)) + translated[4:8] + translated[10:12]
        entry = CtEntry(proto, orig, service, backend_key)
        entry.fwd = CtHalf(entry, orig, translated, reply=False)
        entry.rev = CtHalf(entry, reply_key, reverse(orig), reply=True)
        entry.last_seen = now
        if proto == 6:
            entry.state = SYN_SENT if syn else ESTABLISHED
            entry.timeout = self.timeouts.tcp_syn_sent_s if syn else self.timeouts.tcp_established_s
        else:
            entry.timeout = self.timeouts.udp_s
        table[orig] = entry.fwd
        table[reply_key] = entry.rev
        self.by_backend.setdefault(backend_key, set()).add(entry)
        deadline = now + entry.timeout
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
        return entry

    def tcp_update(self, entry: CtEntry, flags: int, reply: bool) -> None:
        """State change on SYN/FIN/RST or the first reply (see ``tcp_transition``)."""
        change = tcp_transition(entry.state, flags, reply, self.timeouts)
        if change is not None:
            entry.state, entry.timeout = change

    def remove(self, entry: CtEntry) -> None:
        table = self.tables[entry.proto]
        if table.get(entry.fwd.key) is entry.fwd:
            del table[entry.fwd.key]
        if table.get(entry.rev.key) is entry.rev:
            del table[entry.rev.key]
        users = self.by_backend.get(entry.backend_key)
        if users is not None:
            users.discard(entry)
            if not users:
                del self.by_backend[entry.backend_key]

    def entries(self) -> Iterator[CtEntry]:
        for table in self.tables.values():
            for half in table.values():
                if not half.reply:
                    yield half.entry

    def expire(self, now: float) -> list[CtEntry]:
        """Remove entries idle for longer than their timeout; returns them."""
        stale = [e for e in self.entries() if now - e.last_seen > e.timeout]
        for e in stale:
            self.remove(e)
        deadlines = [e.last_seen + e.timeout for e in self.entries()]
        self._deadline = min(deadlines) if deadlines else None
        return stale

    def next_deadline(self) -> float | None:
        """Earliest time an entry may expire (entries used since only expire later)."""
        return self._deadline

    def _of_service(self, backend_keys: set[bytes], proto: int, service: str) -> list[CtEntry]:
        prefix = service + ":"
        return [
            entry
            for key in backend_keys
            if key[0] == proto
            for entry in self.by_backend.get(key, ())
            if entry.service.startswith(prefix)
        ]

    def flush_backends(self, backend_keys: set[bytes], proto: int, service: str) -> int:
        """Delete a service's (``ns/name``) entries of these backends; returns how many."""
        stale = self._of_service(backend_keys, proto, service)
        for entry in stale:
            self.remove(entry)
        return len(stale)

    def mark_dead(self, backend_keys: set[bytes], proto: int, service: str) -> int:
        """Mark a service's entries of these backends dead: the client's next packet of such a
        flow gets a RST (see the router's module docstring)."""
        stale = self._of_service(backend_keys, proto, service)
        for entry in stale:
            entry.dead = True
        return len(stale)

    def related_icmp(self, pkt: bytes, ihl: int) -> bytes | None:
        """Un-NAT an ICMP error about a translated packet (nf_conntrack's RELATED handling).

        A backend answering a DNATed datagram with port unreachable quotes the translated
        packet (client -> backend).  The client's kernel only matches the error to its socket if
        the quote shows what it sent (client -> service address) and the error comes from that
        address, so both are rewritten from the entry; checksums are recomputed in full (rare
        packets).  None when ``pkt`` is no such error."""
        q = ihl + 8
        if len(pkt) < q + 24 or pkt[ihl] not in (3, 11) or pkt[q] >> 4 != 4:
            return None
        qihl = (pkt[q] & 0x0F) * 4
        table = self.tables.get(pkt[q + 9])
        if qihl < 20 or len(pkt) < q + qihl + 4 or not table:
            return None
        quoted = pkt[q + 12 : q + 20] + pkt[q + qihl : q + qihl + 4]
        half = table.get(reverse(quoted))
        if half is None or not half.reply:
            return None
        orig = half.entry.orig
        buf = bytearray(pkt)
        buf[q + 12 : q + 20] = orig[:8]
        buf[q + qihl : q + qihl + 4] = orig[8:12]
        buf[12:16], buf[16:20] = orig[4:8], orig[0:4]
        for start, end, field in ((q, q + qihl, q + 10), (0, ihl, 10), (ihl, len(buf), ihl + 2)):
            buf[field : field + 2] = b"\0\0"
            buf[field : field + 2] = checksum(buf[start:end]).to_bytes(2, "big")
        return bytes(buf)
