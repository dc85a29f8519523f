"""The view follows the watch: every change is answerable as soon as it is applied."""

from __future__ import annotations

import dns.rcode
import pytest
from dns_cluster import answers, ask, endpoint, endpoint_slice, fixture_cluster, pod, service

from knemu.config import DnsConfig
from knemu.dns.answer import Answerer
from knemu.dns.view import ClusterView
from knemu.errors import LocalError

Z = "cluster.local."


def make(pods_mode: str = "insecure") -> Answerer:
    return Answerer(fixture_cluster(), DnsConfig(pods_mode=pods_mode))


def test_servfail_before_first_sync() -> None:
    view = ClusterView()
    view.apply("ADDED", "Service", service("default", "web", "10.96.0.20"))
    answerer = Answerer(view, DnsConfig())
    assert ask(answerer, f"web.default.svc.{Z}").rcode() == dns.rcode.SERVFAIL
    assert ask(answerer, "20.0.96.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.SERVFAIL
    # outside the zone the answer does not depend on the view
    assert ask(answerer, "example.com.").rcode() == dns.rcode.REFUSED
    view.mark_synced(7)
    assert answers(ask(answerer, f"web.default.svc.{Z}")) == {f"web.default.svc.{Z} A 10.96.0.20"}


def test_service_added_modified_deleted() -> None:
    answerer = make()
    view = answerer.view
    name = f"new.default.svc.{Z}"
    assert ask(answerer, name).rcode() == dns.rcode.NXDOMAIN
    view.apply("ADDED", "Service", service("default", "new", "10.96.0.77"))
    assert answers(ask(answerer, name)) == {f"{name} A 10.96.0.77"}
    view.apply("MODIFIED", "Service", service("default", "new", "10.96.0.78"))
    assert answers(ask(answerer, name)) == {f"{name} A 10.96.0.78"}
    assert ask(answerer, "77.0.96.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    view.apply("DELETED", "Service", service("default", "new", "10.96.0.78"))
    assert ask(answerer, name).rcode() == dns.rcode.NXDOMAIN
    assert ask(answerer, "78.0.96.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED


def test_serial_follows_resource_version() -> None:
    answerer = make()
    before = answerer.view.serial
    answerer.view.apply("ADDED", "Service", service("default", "s1", "10.96.0.90"))
    assert answerer.view.serial > before
    (soa,) = ask(answerer, Z, "SOA").answer[0]
    assert soa.serial == answerer.view.serial


def test_endpoint_readiness_changes() -> None:
    answerer = make()
    view = answerer.view
    name = f"empty.team-a.svc.{Z}"
    assert ask(answerer, name).rcode() == dns.rcode.NXDOMAIN
    ready = endpoint_slice("team-a", "empty-1", "empty", [endpoint("10.244.1.20")])
    view.apply("MODIFIED", "EndpointSlice", ready)
    assert answers(ask(answerer, name)) == {f"{name} A 10.244.1.20"}
    view.apply("DELETED", "EndpointSlice", ready)
    assert ask(answerer, name).rcode() == dns.rcode.NXDOMAIN


def test_slices_merge_and_move_between_services() -> None:
    answerer = make()
    view = answerer.view
    extra = endpoint_slice("team-a", "workers-2", "workers", [endpoint("10.244.3.12")])
    view.apply("ADDED", "EndpointSlice", extra)
    assert len(answers(ask(answerer, f"workers.team-a.svc.{Z}"))) == 3
    moved = endpoint_slice("team-a", "workers-2", "db", [endpoint("10.244.3.12")])
    view.apply("MODIFIED", "EndpointSlice", moved)
    assert len(answers(ask(answerer, f"workers.team-a.svc.{Z}"))) == 2
    assert f"db.team-a.svc.{Z} A 10.244.3.12" in answers(ask(answerer, f"db.team-a.svc.{Z}"))


def test_endpoint_without_conditions_is_ready() -> None:
    """discovery.k8s.io/v1: an unset ready condition is interpreted as ready."""
    answerer = make()
    from knemu.proto import knemu_pb2 as pb

    bare = endpoint_slice("team-a", "empty-1", "empty", [pb.Endpoint(addresses=["10.244.1.21"])])
    answerer.view.apply("MODIFIED", "EndpointSlice", bare)
    assert answers(ask(answerer, f"empty.team-a.svc.{Z}")) == {
        f"empty.team-a.svc.{Z} A 10.244.1.21"
    }


def test_fqdn_slices_are_ignored() -> None:
    answerer = make()
    fqdn = endpoint_slice("team-a", "empty-2", "empty", [endpoint("10.244.1.22")], "FQDN")
    answerer.view.apply("ADDED", "EndpointSlice", fqdn)
    assert ask(answerer, f"empty.team-a.svc.{Z}").rcode() == dns.rcode.NXDOMAIN


def test_pod_hostname_follows_the_pod() -> None:
    answerer = make()
    view = answerer.view
    view.apply("MODIFIED", "Pod", pod("team-a", "sub-pod", "10.244.2.40", hostname="crate",
                                     subdomain="sub"))  # fmt: skip
    assert ask(answerer, f"box.sub.team-a.svc.{Z}").rcode() == dns.rcode.NXDOMAIN
    assert answers(ask(answerer, f"crate.sub.team-a.svc.{Z}")) == {
        f"crate.sub.team-a.svc.{Z} A 10.244.2.40"
    }
    view.apply("DELETED", "Pod", pod("team-a", "sub-pod", "10.244.2.40"))
    # the endpoint remains, now named by its IP
    assert answers(ask(answerer, f"10-244-2-40.sub.team-a.svc.{Z}")) == {
        f"10-244-2-40.sub.team-a.svc.{Z} A 10.244.2.40"
    }


def test_invalid_hostnames_fall_back_to_the_dashed_ip() -> None:
    answerer = make()
    bad = endpoint("10.244.3.3", hostname="Not_A.Label")
    answerer.view.apply("ADDED", "EndpointSlice", endpoint_slice("team-a", "sub-2", "sub", [bad]))
    assert answers(ask(answerer, f"10-244-3-3.sub.team-a.svc.{Z}")) == {
        f"10-244-3-3.sub.team-a.svc.{Z} A 10.244.3.3"
    }
    reply = ask(answerer, f"_http._tcp.sub.team-a.svc.{Z}", "SRV")
    assert len(reply.answer[0]) == 2


def test_headless_srv_uses_the_endpoint_target_port() -> None:
    """A headless service is not proxied: SRV gives the port the pods listen on (CoreDNS)."""
    from knemu.proto import knemu_pb2 as pb

    answerer = make()
    view = answerer.view
    view.apply("ADDED", "Service", service("team-a", "tp", "None", [("http", "TCP", 80)]))
    eps = endpoint_slice("team-a", "tp-1", "tp", [endpoint("10.244.4.4", hostname="a")])
    eps.ports.append(pb.EndpointPort(name="http", protocol="TCP", port=8080))
    view.apply("ADDED", "EndpointSlice", eps)
    assert answers(ask(answerer, f"_http._tcp.tp.team-a.svc.{Z}", "SRV")) == {
        f"_http._tcp.tp.team-a.svc.{Z} SRV 0 100 8080 a.tp.team-a.svc.{Z}"
    }


def test_pods_verified_only_existing_pods() -> None:
    answerer = make("verified")
    assert answers(ask(answerer, f"10-244-1-50.team-a.pod.{Z}")) == {
        f"10-244-1-50.team-a.pod.{Z} A 10.244.1.50"
    }
    assert ask(answerer, f"10-244-1-50.default.pod.{Z}").rcode() == dns.rcode.NXDOMAIN
    assert ask(answerer, f"10-244-9-9.team-a.pod.{Z}").rcode() == dns.rcode.NXDOMAIN
    answerer.view.apply("DELETED", "Pod", pod("team-a", "web-1", "10.244.1.50"))
    assert ask(answerer, f"10-244-1-50.team-a.pod.{Z}").rcode() == dns.rcode.NXDOMAIN


def test_pods_disabled() -> None:
    answerer = make("disabled")
    assert ask(answerer, f"10-244-1-50.team-a.pod.{Z}").rcode() == dns.rcode.NXDOMAIN
    assert ask(answerer, f"team-a.pod.{Z}").rcode() == dns.rcode.NXDOMAIN


def test_namespace_exists_while_objects_live_in_it() -> None:
    view = ClusterView()
    view.mark_synced()
    answerer = Answerer(view, DnsConfig())
    assert ask(answerer, f"solo.svc.{Z}").rcode() == dns.rcode.NXDOMAIN
    svc = service("solo", "one", "10.96.0.99")
    view.apply("ADDED", "Service", svc)
    view.apply("MODIFIED", "Service", svc)
    reply = ask(answerer, f"solo.svc.{Z}")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    view.apply("DELETED", "Service", svc)
    assert ask(answerer, f"solo.svc.{Z}").rcode() == dns.rcode.NXDOMAIN
    assert view.statistics()["services"] == 0


def test_external_name_chain_is_bounded() -> None:
    view = ClusterView()
    view.mark_synced()
    for i in range(12):  # loop a -> b -> a ... must not spin forever
        target = f"loop{(i + 1) % 2}.default.svc.cluster.local"
        view.apply("ADDED", "Service", service("default", f"loop{i % 2}", type="ExternalName",
                                               external_name=target))  # fmt: skip
    reply = ask(Answerer(view, DnsConfig()), f"loop0.default.svc.{Z}")
    assert reply.rcode() == dns.rcode.NOERROR
    assert 1 <= len(reply.answer) <= 8


def test_bad_events_name_the_problem() -> None:
    view = ClusterView()
    with pytest.raises(LocalError, match="kind 'Node'"):
        view.apply("ADDED", "Node", service("default", "x"))
    with pytest.raises(LocalError, match="event type 'SYNCED'"):
        view.apply("SYNCED", "Service", service("default", "x"))
