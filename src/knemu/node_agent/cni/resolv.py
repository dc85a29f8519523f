"""A pod's /etc/resolv.conf and /etc/hosts, as the kubelet writes them (sans-I/O).

Follows "DNS for Services and Pods", section "Pod's DNS Policy" and "Pod's DNS Config"
(https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/) and the kubelet's
pkg/kubelet/network/dns/dns.go:

* ``ClusterFirst`` (the default): nameserver = the cluster DNS (kube-dns 10.96.0.10),
  ``search <ns>.svc.<zone> svc.<zone> <zone>``, ``options ndots:5``.  The kubelet would also
  append the node's own search domains; knemu does not, because the node's domains name the
  underlay, which pods cannot resolve anyway, and DESIGN.md fixes the three-entry list.
* ``Default``: the node's resolv.conf (nameservers, search, options).
* ``None``: only ``dnsConfig``.
* ``ClusterFirstWithHostNet`` is ClusterFirst; ``ClusterFirst`` on a hostNetwork pod is Default.
* ``dnsConfig`` is merged into every policy: nameservers and searches are appended without
  duplicates, options override by name; then the kubelet's limits apply (3 nameservers,
  32 search domains of at most 2048 characters in total).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knemu.config import CLUSTER_DOMAIN, DNS_SERVICE_IP

MAX_NAMESERVERS = 3  # glibc MAXNS; kubelet validation.MaxDNSNameservers
MAX_SEARCH_PATHS = 32  # kubelet validation.MaxDNSSearchPaths (since 1.28)
MAX_SEARCH_CHARS = 2048  # kubelet validation.MaxDNSSearchListChars


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # "name" or "name:value"

    def render(self) -> str:
        lines = [f"nameserver {ns}" for ns in self.nameservers]
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DnsConfig:
    """spec.dnsConfig (pb.PodDNSConfig as plain data; options are (name, value))."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse a resolv.conf (resolv.conf(5)); unknown keywords are ignored."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver" and rest:
            nameservers.append(rest[0])
        elif key in ("search", "domain"):
            searches = list(rest)  # the last search/domain line wins, as in glibc
        elif key == "options":
            options.extend(rest)
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def pod_resolv_conf(
    *,
    namespace: str,
    dns_policy: str,
    dns_config: DnsConfig,
    host_network: bool = False,
    node_resolv: ResolvConf = ResolvConf(),
    cluster_domain: str = CLUSTER_DOMAIN,
    cluster_dns: str = DNS_SERVICE_IP,
) -> ResolvConf:
    """The resolv.conf a pod gets for its dnsPolicy and dnsConfig."""
    policy = dns_policy or "ClusterFirst"
    if policy == "ClusterFirstWithHostNet":
        policy = "ClusterFirst"
    elif policy == "ClusterFirst" and host_network:
        policy = "Default"
    if policy == "ClusterFirst":
        zone = cluster_domain
        base = ResolvConf(
            (cluster_dns,), (f"{namespace}.svc.{zone}", f"svc.{zone}", zone), ("ndots:5",)
        )
    elif policy == "Default":
        base = node_resolv
    elif policy == "None":
        base = ResolvConf()
    else:
        raise ValueError(
            f"dnsPolicy {dns_policy!r} is not ClusterFirst, ClusterFirstWithHostNet, "
            "Default or None; fix spec.dnsPolicy"
        )
    return _fit_limits(_merge(base, dns_config))


def _merge(base: ResolvConf, extra: DnsConfig) -> ResolvConf:
    options: dict[str, str] = {}
    for opt in base.options:
        name, _, value = opt.partition(":")
        options[name] = opt
    for name, value in extra.options:
        options[name] = f"{name}:{value}" if value else name
    return ResolvConf(
        _unique(base.nameservers + extra.nameservers),
        _unique(base.searches + extra.searches),
        tuple(options.values()),
    )


def _fit_limits(conf: ResolvConf) -> ResolvConf:
    searches: list[str] = []
    total = 0
    for name in conf.searches[:MAX_SEARCH_PATHS]:
        total += len(name) + (1 if searches else 0)
        if total > MAX_SEARCH_CHARS:
            break
        searches.append(name)
    return ResolvConf(conf.nameservers[:MAX_NAMESERVERS], tuple(searches), conf.options)


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def pod_hosts_file(
    *, pod_ip: str, hostname: str, subdomain: str, namespace: str, cluster_domain: str
) -> str:
    """/etc/hosts as the kubelet manages it (pkg/kubelet/kubelet_pods.go managedHostsFileContent):
    localhost entries, then the pod's own address with its FQDN when it has a subdomain."""
    lines = [
        "# Kubernetes-managed hosts file (knemu).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod_ip:
        if subdomain:
            fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}"
            lines.append(f"{pod_ip}\t{fqdn}\t{hostname}")
        else:
            lines.append(f"{pod_ip}\t{hostname}")
    return "\n".join(lines) + "\n"
