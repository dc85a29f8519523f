"""The router's NetworkPolicy gate: which packets need a verdict, and the table of allowed
connections that makes a connection's first packet the only one evaluated (sans-I/O).

Theory of operation.  The router asks ``admit`` about every packet it is about to forward, but
only while some local pod is isolated (otherwise it holds no gate at all: one falsy check per
packet).  A packet concerns policy when it comes from a local pod that is isolated in some
direction, or goes to one (``PolicyEngine.tracked``); anything else passes at once.  For the
others, as with Calico's use of Linux conntrack ("-m conntrack --ctstate ESTABLISHED,RELATED
-j ACCEPT" before the policy chains):

* a packet of a connection in the table passes, in either direction (replies of an allowed
  connection are always allowed), and refreshes the entry's idle timer; TCP entries follow
  SYN/FIN/RST to pick their timeout (``conntrack.tcp_transition``);
* otherwise it opens a connection: the sender's egress policy is checked when the sender is a
  local pod, the receiver's ingress policy when the receiver is one, and an allowed connection
  is recorded.  A denied packet is dropped silently (no RST): the client times out, as with
  Calico's default action.

What the verdict sees: the destination after kube-proxy's DNAT (the backend pod and its target
port, as in real clusters) and the source as the receiver sees it (after masquerade).  Traffic
from this node itself (the host TUN, or masqueraded to the node's gateway: kubelet probes,
NodePorts, hairpin) is always allowed into local pods, Calico's default and what the
Kubernetes docs say a pod cannot block.  Another node's own traffic (a NodePort connection
relayed by node-M to a pod here arrives from 10.244.M.1) is judged like any address: an
ipBlock may allow it.  Further choices, written down here:

* a mid-stream TCP segment (no SYN) of an unknown connection, e.g. one opened before its pod
  became isolated, passes if the connection would be allowed in either direction (Linux
  conntrack picks up such connections too); a bare SYN is always judged as a new connection;
* ICMP errors (destination unreachable, time exceeded, ...) pass as RELATED: they cannot open
  anything; echo requests are connections of their own (id), their replies match them;
* non-first IP fragments carry no ports and pass: the pod's kernel cannot reassemble a
  datagram whose first fragment was dropped;
* tightening a policy does not cut connections already in the table (Calico's iptables data
  plane keeps established flows too); they end with the connection or its idle timeout.
"""

from __future__ import annotations

from typing import Any

from knemu.node_agent.events import POINT_FROM_HOST, POINT_FROM_POD, PROTO_NAMES
from knemu.node_agent.kubeproxy.conntrack import (
    ESTABLISHED,
    SYN_SENT,
    UDP,
    CtHalf,
    CtTimeouts,
    reverse,
    tcp_transition,
)
from knemu.node_agent.policy.engine import PolicyEngine
from knemu.proto import wire

MAX_CONNECTIONS = 65536  # like nf_conntrack_max on a small node; the oldest entry goes first
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
_ECHO = b"\x08\x00"  # ICMP echo request type/code
_SYN_ACK = wire.TCP_SYN | wire.TCP_ACK
SNAPSHOT_ENTRIES = 200  # allowed connections listed in /table


class Allowed:
    """One allowed connection: its two keys (as packets of each direction carry them)."""

    __slots__ = ("key", "last_seen", "proto", "rkey", "state", "timeout")

    def __init__(self, proto: int, key: bytes, rkey: bytes) -> None:
        self.proto = proto
        self.key = key
        self.rkey = rkey
        self.state = UDP
        self.timeout = 0.0
        self.last_seen = 0.0

    def to_dict(self) -> dict[str, object]:
        k = self.key
        return {
            "protocol": PROTO_NAMES.get(self.proto, str(self.proto)),
            "src": wire.bytes_to_ip(k[0:4]),
            "dst": wire.bytes_to_ip(k[4:8]),
            "sport": int.from_bytes(k[8:10], "big") if self.proto != 1 else 0,
            "dport": int.from_bytes(k[10:12], "big") if self.proto != 1 else 0,
            "state": self.state,
            "last_seen": self.last_seen,
            "timeout_s": self.timeout,
        }


class PolicyGate:
    """Verdicts for the router (module docstring); ``engine`` holds the policies."""

    def __init__(
        self,
        engine: PolicyEngine,
        gateway_ip: str,
        timeouts: CtTimeouts | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.engine = engine
        self._gw = wire.ip_to_bytes(gateway_ip)
        self.timeouts = timeouts or CtTimeouts()
        self.max_connections = max_connections
        self._tables: dict[int, dict[bytes, Allowed]] = {}  # per protocol, both keys
        self._count = 0
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    # -- the per-packet question ----------------------------------------------------------------

    def admit(
        self,
        pkt: bytes,
        ihl: int,
        dst: bytes,
        half: CtHalf | None,
        origin: str,
        to_pod: bool,
        now: float,
    ) -> bool:
        """May this packet go on?  ``dst``: its destination after NAT; ``half``: its kube-proxy
        translation, if any; ``to_pod``: ``dst`` is a local pod."""
        tracked = self.engine.tracked
        src = pkt[12:16]
        if not ((origin is POINT_FROM_POD and src in tracked) or (to_pod and dst in tracked)):
            return True
        if pkt[6] & 0x1F or pkt[7]:
            return True  # a later fragment (module docstring)
        proto = pkt[9]
        if proto == 6 or proto == 17:
            # Keyed as packets travel between the two pods: after DNAT one way, before the
            # un-NAT the other way, so both directions of a translated flow find the entry.
            key = half.addrs + half.ports if half is not None and not half.reply else None
            if key is None:
                key = pkt[12:20] + pkt[ihl : ihl + 4]
        elif proto == 1:
            key = _icmp_key(pkt, ihl)
            if key is None:
                return True  # an ICMP error: RELATED
        else:
            key = pkt[12:20] + bytes(4)  # no ports we know of: one flow per address pair
        table = self._tables.get(proto)
        entry = table.get(key) if table else None
        if entry is not None:
            if now - entry.last_seen <= entry.timeout:
                entry.last_seen = now
                if proto == 6:
                    flags = pkt[ihl + 13]
                    if flags & 0x07 or entry.state == SYN_SENT:
                        change = tcp_transition(entry.state, flags, key != entry.key, self.timeouts)
                        if change is not None:
                            entry.state, entry.timeout = change
                return True
            self._remove(entry)
        return self._open(pkt, ihl, proto, key, half, origin, to_pod, now)

    def _open(
        self,
        pkt: bytes,
        ihl: int,
        proto: int,
        key: bytes,
        half: CtHalf | None,
        origin: str,
        to_pod: bool,
        now: float,
    ) -> bool:
        """A connection's first packet: ask the engine, record the connection if allowed."""
        src = pkt[12:16]
        seen = half.addrs + half.ports if half is not None else key  # as the receiver sees it
        peer, dst = seen[0:4], seen[4:8]
        ports = proto == 6 or proto == 17
        sport = seen[8] << 8 | seen[9] if ports else 0
        dport = seen[10] << 8 | seen[11] if ports else 0
        from_pod = origin is POINT_FROM_POD
        # The node itself may always reach its pods (module docstring).
        from_host = origin is POINT_FROM_HOST or (from_pod and peer == self._gw)
        eng = self.engine
        allowed = (not from_pod or eng.allows_egress(src, dst, proto, dport)) and (
            not to_pod or from_host or eng.allows_ingress(dst, peer, proto, dport)
        )
        syn = proto == 6 and pkt[ihl + 13] & _SYN_ACK == wire.TCP_SYN
        if not allowed and proto == 6 and not syn:
            # Mid-stream: allowed if the connection would be allowed the other way round.
            allowed = (not to_pod or eng.allows_egress(dst, peer, proto, sport)) and (
                not from_pod or eng.allows_ingress(src, dst, proto, sport)
            )
        if allowed:
            self._record(proto, key, syn, now)
        return allowed

    # -- the table ------------------------------------------------------------------------------

    def _record(self, proto: int, key: bytes, syn: bool, now: float) -> None:
        if self._count >= self.max_connections:
            self._evict_oldest()
        rkey = reverse(key)  # for an echo request: its reply's key (_icmp_key)
        entry = Allowed(proto, key, rkey)
        entry.last_seen = now
        t = self.timeouts
        if proto == 6:
            entry.state = SYN_SENT if syn else ESTABLISHED
            entry.timeout = t.tcp_syn_sent_s if syn else t.tcp_established_s
        else:
            entry.timeout = t.udp_s  # UDP and ICMP: 30 s, as nf_conntrack's defaults
        table = self._tables.setdefault(proto, {})
        for k in (key, rkey):
            old = table.get(k)
            if old is not None:
                self._remove(old)
        table[key] = entry
        table[rkey] = entry
        self._count += 1

    def _remove(self, entry: Allowed) -> None:
        table = self._tables.get(entry.proto, {})
        removed = False
        for k in (entry.key, entry.rkey):
            if table.get(k) is entry:
                del table[k]
                removed = True
        if removed:
            self._count -= 1

    def _evict_oldest(self) -> None:
        table = max(self._tables.values(), key=len)
        self._remove(table[next(iter(table))])
        self.evicted += 1

    def entries(self) -> list[Allowed]:
        return [e for t in self._tables.values() for k, e in t.items() if k == e.key]

    def expire(self, now: float) -> int:
        """Forget connections idle past their timeout; returns how many."""
        stale = [e for e in self.entries() if now - e.last_seen > e.timeout]
        for entry in stale:
            self._remove(entry)
        return len(stale)

    def clear(self) -> None:
        self._tables.clear()
        self._count = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable: the allowed connections (the first SNAPSHOT_ENTRIES)."""
        entries = self.entries()
        return {
            "allowed_connections": len(entries),
            "max_connections": self.max_connections,
            "evicted": self.evicted,
            "connections": [e.to_dict() for e in entries[:SNAPSHOT_ENTRIES]],
        }


def _icmp_key(pkt: bytes, ihl: int) -> bytes | None:
    """Echo request: src, dst, id, 08 00; echo reply: src, dst, 08 00, id (the reverse of its
    request's key); other messages: src, dst, type, code, 0; None for errors (RELATED)."""
    if len(pkt) < ihl + 8:
        return pkt[12:20] + bytes(4)
    kind = pkt[ihl]
    if kind in ICMP_ERRORS:
        return None
    ident = pkt[ihl + 4 : ihl + 6]
    if kind == 8:
        return pkt[12:20] + ident + _ECHO
    if kind == 0:
        return pkt[12:20] + _ECHO + ident
    return pkt[12:20] + bytes((kind, pkt[ihl + 1], 0, 0))
