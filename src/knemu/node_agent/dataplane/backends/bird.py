"""BGP for native routing: BIRD 2 configuration written per node, and BIRD's status read back.

As Calico's node does (its confd templates render ``bird.cfg``), each node runs a real BGP
speaker, BIRD 2 from Debian: one ``protocol bgp`` per peer, an iBGP node-to-node mesh in one AS
by default (Calico's 64512), or, with route reflectors, sessions only to the reflectors (which
peer with every node as ``rr client``).  Each node announces its podCIDR (a ``static``
blackhole route, as Calico's IPAM blocks are announced) and BIRD writes the routes it learns
into the kernel table (``protocol kernel``), next hop the announcing node's underlay address.

Sans-I/O: ``render`` returns the configuration text; ``parse_protocols`` and ``parse_routes``
read ``birdc show protocols`` / ``birdc show route`` output.  Running BIRD is the caller's job.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from knemu.errors import ConfigError

DEFAULT_AS = 64512  # Calico's default AS number (a private ASN, RFC 6996)
# BGP hold time (RFC 4271 section 4.2; BIRD's default is 240 s, Calico's BIRD 90 s): a peer
# silent this long is declared down and its routes are withdrawn.  Short, so a killed node's
# podCIDR leaves the others' tables in seconds; keepalives every third of it.
DEFAULT_HOLD_TIME_S = 9


@dataclass(frozen=True)
class BgpConfig:
    """One node's speaker: its underlay address (router id and session source), its podCIDR
    and the underlay addresses of the nodes it peers with."""

    node: str
    underlay_ip: str
    pod_cidr: str
    peers: tuple[str, ...]
    asn: int = DEFAULT_AS
    hold_time_s: int = DEFAULT_HOLD_TIME_S
    route_reflectors: tuple[str, ...] = ()  # underlay IPs; empty: full node-to-node mesh
    # Routers outside the cluster every node peers with (Calico's global BGPPeer resources: a
    # top-of-rack router, an external client): (IP, AS); another AS than ours is eBGP.
    external_peers: tuple[tuple[str, int], ...] = ()
    # BFD (RFC 5880) beside every session: a peer silent for 3 intervals is down, long before
    # the hold time; 0: off (the hold timer alone, as Calico's default).
    bfd_interval_ms: int = 0
    kernel_table: int = 254  # main

    def validate(self) -> None:
        what = f"node {self.node} BGP"
        for ip in (
            self.underlay_ip,
            *self.peers,
            *self.route_reflectors,
            *(ip for ip, _ in self.external_peers),
        ):
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise ConfigError(f"{what}: {ip!r} is not an IPv4 address") from None
        try:
            ipaddress.IPv4Network(self.pod_cidr)
        except ValueError:
            raise ConfigError(f"{what}: podCIDR {self.pod_cidr!r} is not an IPv4 CIDR") from None
        for asn in (self.asn, *(asn for _, asn in self.external_peers)):
            if not 1 <= asn <= 4294967295:
                raise ConfigError(f"{what}: AS {asn} must be 1..4294967295")
        if not 3 <= self.hold_time_s <= 65535:
            raise ConfigError(f"{what}: hold time {self.hold_time_s} s must be 3..65535 (RFC 4271)")
        if self.bfd_interval_ms and not 10 <= self.bfd_interval_ms <= 10000:
            raise ConfigError(f"{what}: BFD interval {self.bfd_interval_ms} ms must be 10..10000")


def protocol_name(peer_ip: str) -> str:
    """Calico's naming: ``Mesh_192_168_59_12`` (``Node_`` for a route reflector session)."""
    return "Mesh_" + peer_ip.replace(".", "_")


def sessions_of(cfg: BgpConfig) -> list[tuple[str, bool]]:
    """(peer IP, peer is our rr client) for every session this node opens."""
    others = [p for p in cfg.peers if p != cfg.underlay_ip]
    if not cfg.route_reflectors:
        return [(p, False) for p in others]
    if cfg.underlay_ip in cfg.route_reflectors:  # a reflector: every other node is a client
        return [(p, p not in cfg.route_reflectors) for p in others]
    return [(p, False) for p in cfg.route_reflectors if p != cfg.underlay_ip]


def render(cfg: BgpConfig) -> str:
    """The ``bird.conf`` of one node (BIRD 2 syntax)."""
    cfg.validate()
    keepalive = max(1, cfg.hold_time_s // 3)
    lines = [
        f"# knemu node {cfg.node}: written by the agent, as Calico's confd writes bird.cfg",
        f"router id {cfg.underlay_ip};",
        "protocol device { scan time 10; }",
        "protocol static pods {",
        "  ipv4;",
        f"  route {cfg.pod_cidr} blackhole;  # this node's podCIDR, announced to the peers",
        "}",
        "protocol kernel {",
        f"  kernel table {cfg.kernel_table};",
        "  ipv4 { import none; export where source = RTS_BGP; };",
        "}",
        *_bfd_lines(cfg.bfd_interval_ms),
        "template bgp mesh {",
        f"  local {cfg.underlay_ip} as {cfg.asn};",
        *(["  bfd on;"] if cfg.bfd_interval_ms else []),
        "  direct;  # peers share the underlay subnet (iBGP is multihop by default in BIRD 2)",
        f"  hold time {cfg.hold_time_s};",
        f"  keepalive time {keepalive};",
        "  connect retry time 1;",
        "  error wait time 1, 5;",
        "  ipv4 {",
        "    import all;",
        '    export where proto = "pods" || source = RTS_BGP;',
        # In the mesh every route is our own: announced with our address.  A reflector must
        # pass on the originator's next hop (BIRD keeps it for iBGP unless told ``self``;
        # locally originated routes still get ours), so traffic goes node to node directly.
        *(["    next hop self;"] if not cfg.route_reflectors else []),
        "  };",
        "}",
    ]
    for peer, client in sessions_of(cfg):
        rr = " rr client; rr cluster id 1.0.0.1;" if client else ""
        lines.append(
            f"protocol bgp {protocol_name(peer)} from mesh {{ neighbor {peer} as {cfg.asn};{rr} }}"
        )
    for ip, asn in cfg.external_peers:  # Calico names these Global_<ip>
        if ip != cfg.underlay_ip:
            # ``allow local as``: the other rack's nodes share our AS, so their routes come
            # back from the top-of-rack router with it in the path (BGP's loop check would
            # drop them; Calico's racks use the same AS behind their ToR too).
            name = "Global_" + ip.replace(".", "_")
            lines.append(
                f"protocol bgp {name} from mesh {{ neighbor {ip} as {asn}; allow local as; }}"
            )
    return "\n".join(lines) + "\n"


def _bfd_lines(interval_ms: int) -> list[str]:
    if not interval_ms:
        return []
    return [
        "protocol bfd {",
        f'  interface "*" {{ min rx interval {interval_ms} ms; min tx interval {interval_ms} ms;'
        " multiplier 3; };",
        "}",
    ]


def render_router(router_id: str, asn: int, neighbors: list[tuple[str, int]]) -> str:
    """``bird.conf`` of a router outside the cluster that peers with the nodes (the emulated
    top-of-rack router of two-rack clusters): eBGP with each, every route learned passed on
    and written into its kernel, so it forwards pod packets between the racks."""
    lines = [
        f"router id {router_id};",
        "protocol device { scan time 10; }",
        "protocol kernel { ipv4 { import none; export all; }; }",
        "template bgp nodes {",
        f"  local as {asn};",
        "  direct;",
        f"  hold time {DEFAULT_HOLD_TIME_S};",
        f"  keepalive time {DEFAULT_HOLD_TIME_S // 3};",
        "  connect retry time 1;",
        "  error wait time 1, 5;",
        "  ipv4 { import all; export all; };",
        "}",
    ]
    for ip, peer_as in neighbors:
        name = "Node_" + ip.replace(".", "_")
        lines.append(f"protocol bgp {name} from nodes {{ neighbor {ip} as {peer_as}; }}")
    return "\n".join(lines) + "\n"


def parse_external_peers(text: str) -> tuple[tuple[str, int], ...]:
    """``IP:AS[,IP:AS]`` (``--bgp-peers``); ConfigError names the bad item."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        ip, _, asn = item.partition(":")
        try:
            ipaddress.IPv4Address(ip)
            out.append((ip, int(asn or DEFAULT_AS)))
        except ValueError:
            raise ConfigError(f"BGP peer {item!r}: give IP:AS, e.g. 192.168.59.70:64600") from None
    return tuple(out)


@dataclass(frozen=True)
class Session:
    """One row of ``birdc show protocols`` for a BGP protocol."""

    name: str
    state: str  # up | start | down
    since: str
    info: str  # Established | Active | Connect | ...

    @property
    def established(self) -> bool:
        return self.info.startswith("Established")


@dataclass(frozen=True)
class Route:
    prefix: str
    via: str  # next hop
    protocol: str
    best: bool = True
    extra: dict[str, str] = field(default_factory=dict)


def parse_protocols(text: str) -> list[Session]:
    """BGP rows of ``birdc show protocols`` (``Name Proto Table State Since Info``)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 5 or words[1] != "BGP":
            continue
        # Since is "HH:MM:SS.mmm" or "YYYY-MM-DD HH:MM:SS" (two words) by BIRD's timeformat.
        rest = words[4:]
        since = rest.pop(0)
        if rest and re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?", rest[0]):
            since += " " + rest.pop(0)
        out.append(Session(words[0], words[3], since, " ".join(rest)))
    return out


_ROUTE = re.compile(r"^(\d+\.\d+\.\d+\.\d+/\d+)\s+\S+\s+\[(\S+)[^\]]*\]\s*(\*)?")
_VIA = re.compile(r"^\s+via\s+(\d+\.\d+\.\d+\.\d+)")


def parse_routes(text: str) -> list[Route]:
    """Routes of ``birdc show route`` (the prefix line, then an indented ``via`` line)."""
    out: list[Route] = []
    current: tuple[str, str, bool] | None = None
    for line in text.splitlines():
        m = _ROUTE.match(line)
        if m:
            current = (m.group(1), m.group(2), m.group(3) == "*")
            continue
        v = _VIA.match(line)
        if v and current is not None:
            out.append(Route(current[0], v.group(1), current[1], current[2]))
            current = None
    return out
