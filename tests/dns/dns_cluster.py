"""A fixture cluster: services of every type, endpoints ready and not, pods with subdomains."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.rdatatype

from knemu.dns.answer import Answerer, Reply
from knemu.dns.view import ClusterView
from knemu.proto import knemu_pb2 as pb

_rv = iter(range(1, 1_000_000))


def meta(ns: str, name: str, **labels: str) -> pb.ObjectMeta:
    return pb.ObjectMeta(namespace=ns, name=name, resource_version=next(_rv), labels=labels)


def service(
    ns: str,
    name: str,
    cluster_ip: str = "",
    ports: list[tuple[str, str, int]] | None = None,
    *,
    type: str = "ClusterIP",
    external_name: str = "",
    publish_not_ready: bool = False,
    cluster_ips: list[str] | None = None,
) -> pb.Service:
    return pb.Service(
        metadata=meta(ns, name),
        type=type,
        cluster_ip=cluster_ip,
        cluster_ips=cluster_ips or [],
        ports=[pb.ServicePort(name=n, protocol=p, port=port) for n, p, port in ports or []],
        external_name=external_name,
        publish_not_ready_addresses=publish_not_ready,
    )


def endpoint(ip: str, ready: bool = True, hostname: str = "") -> pb.Endpoint:
    return pb.Endpoint(
        addresses=[ip], conditions=pb.EndpointConditions(ready=ready), hostname=hostname
    )


def endpoint_slice(
    ns: str, name: str, svc: str, endpoints: list[pb.Endpoint], address_type: str = "IPv4"
) -> pb.EndpointSlice:
    return pb.EndpointSlice(
        metadata=meta(ns, name),
        service_name=svc,
        address_type=address_type,
        endpoints=endpoints,
    )


def pod(
    ns: str, name: str, ip: str, *, hostname: str = "", subdomain: str = "", ready: bool = True
) -> pb.Pod:
    return pb.Pod(
        metadata=meta(ns, name), pod_ip=ip, hostname=hostname, subdomain=subdomain, ready=ready
    )


def fixture_cluster() -> ClusterView:
    """The cluster every answer-core test queries (namespaces default, kube-system, team-a)."""
    view = ClusterView()
    populate(view)
    view.mark_synced()
    return view


def populate(view: ClusterView) -> None:
    """Apply the fixture cluster's objects to ``view`` as ADDED events."""
    objects = [
        ("Service", service("default", "kubernetes", "10.96.0.1", [("https", "TCP", 443)])),
        (
            "Service",
            service(
                "kube-system",
                "kube-dns",
                "10.96.0.10",
                [("dns", "UDP", 53), ("dns-tcp", "TCP", 53)],
            ),
        ),
        # ClusterIP with a named and an unnamed... (k8s: unnamed only when single) port
        ("Service", service("default", "web", "10.96.0.20", [("http", "TCP", 80)])),
        ("Service", service("default", "plain", "10.96.0.21", [("", "TCP", 8080)])),
        (
            "Service",
            service(
                "default",
                "dual",
                "10.96.0.22",
                [("http", "TCP", 80)],
                cluster_ips=["10.96.0.22", "fd00:96::22"],
            ),
        ),
        ("Service", service("team-a", "db", "None", [("pg", "TCP", 5432)])),
        (
            "EndpointSlice",
            endpoint_slice(
                "team-a",
                "db-abc",
                "db",
                [
                    endpoint("10.244.1.5", hostname="db-0"),
                    endpoint("10.244.2.6", hostname="db-1"),
                    endpoint("10.244.3.7", ready=False, hostname="db-2"),
                ],
            ),
        ),
        ("Service", service("team-a", "workers", "None", [("http", "TCP", 8080)])),
        (
            "EndpointSlice",
            endpoint_slice(
                "team-a",
                "workers-1",
                "workers",
                [
                    endpoint("10.244.1.10"),
                    endpoint("10.244.2.11"),
                ],
            ),
        ),
        ("Service", service("team-a", "empty", "None", [("http", "TCP", 80)])),
        (
            "EndpointSlice",
            endpoint_slice(
                "team-a",
                "empty-1",
                "empty",
                [
                    endpoint("10.244.1.20", ready=False),
                ],
            ),
        ),
        (
            "Service",
            service("team-a", "warm", "None", [("http", "TCP", 80)], publish_not_ready=True),
        ),
        (
            "EndpointSlice",
            endpoint_slice(
                "team-a",
                "warm-1",
                "warm",
                [
                    endpoint("10.244.1.30", ready=False),
                ],
            ),
        ),
        ("Service", service("team-a", "nobody", "10.96.0.30", [("http", "TCP", 80)])),
        ("Service", service("team-a", "ext", type="ExternalName", external_name="www.example.com")),
        (
            "Service",
            service(
                "team-a",
                "alias",
                type="ExternalName",
                external_name="web.default.svc.cluster.local",
            ),
        ),
        ("Service", service("team-a", "sub", "None", [("http", "TCP", 80)])),
        ("EndpointSlice", endpoint_slice("team-a", "sub-1", "sub", [endpoint("10.244.2.40")])),
        ("Pod", pod("team-a", "sub-pod", "10.244.2.40", hostname="box", subdomain="sub")),
        ("Pod", pod("team-a", "web-1", "10.244.1.50")),
    ]
    for kind, obj in objects:
        view.apply("ADDED", kind, obj)


def ask(answerer: Answerer, name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
    """Send one query through the core as wire bytes; parse and return the reply."""
    proto = kwargs.pop("proto", "udp")
    query = dns.message.make_query(name, rdtype, **kwargs)
    outcome = answerer.handle(query.to_wire(), proto)
    assert isinstance(outcome, Reply), outcome
    reply = dns.message.from_wire(outcome.wire)
    assert reply.id == query.id
    return reply


def answers(reply: dns.message.Message) -> set[str]:
    """The answer section as `owner TYPE rdata` strings (owners as sent)."""
    return {
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in reply.answer
        for rd in rrset
    }


def additional(reply: dns.message.Message) -> set[str]:
    return {
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in reply.additional
        for rd in rrset
    }


@dataclass
class Dig:
    status: str
    flags: set[str]
    answer: list[str]
    additional: list[str]
    text: str


async def dig(port: int, *args: str) -> Dig:
    """Run dig against 127.0.0.1:port without blocking the loop the server runs on."""
    proc = await asyncio.create_subprocess_exec(
        "dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=3", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    status = re.search(r"status: (\w+)", text)
    flags = re.search(r"flags: ([a-z ]*);", text)
    assert status and flags, f"dig {args}: {text}{err.decode()}"
    return Dig(status[1], set(flags[1].split()), _section(text, "ANSWER"),
               _section(text, "ADDITIONAL"), text)  # fmt: skip


def _section(text: str, name: str) -> list[str]:
    match = re.search(rf";; {name} SECTION:\n(.*?)(?:\n\n|\Z)", text, re.S)
    if not match:
        return []
    return sorted(" ".join(line.split()) for line in match[1].splitlines() if line.strip())
