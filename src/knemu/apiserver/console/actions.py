"""The console's trace and chaos actions, done the way `knemu trace` and `knemu chaos` do them.

Trace (as ``knemu.cli.observe``): resolve the destination (an IPv4 address, ``pod/NAME``,
``svc/NAME``, a service name or its DNS name ``NAME.NS.svc.cluster.local``) to an address; arm
every other node to record forwarded packets; ask the source pod's node to inject the probe
(``POST /trace``); then read the other nodes' hops of the probe from their ``/flows``.

Chaos: network impairments go to the node's agent (``POST``/``DELETE /chaos``) exactly as
`knemu chaos` sends them.  Process chaos needs whatever runs the node (the docker engine, or
the process groups of `knemu up`), which the api-server does not hold, so the console asks
the node's agent to do it to itself (``POST /lifecycle``): ``kill`` makes the agent and its
pods die at once (SIGKILL, no draining), ``freeze`` stops the agent for some seconds (no
forwarding, no lease renewals, no API), after which it thaws by itself.  ``start`` of a killed
node is not possible from here: that is `knemu chaos start-node` where the cluster runs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from knemu.apiserver.console.agents import AgentClient
from knemu.apiserver.storage.store import Store
from knemu.errors import KnemuError, LocalError, NotFound

Obj = dict[str, Any]
CLUSTER_DOMAIN = "svc.cluster.local"
IMPAIRMENT_FIELDS = {"delay": "delay_ms", "loss": "loss_pct", "duplicate": "duplicate_pct",
                     "corrupt": "corrupt_pct", "rate": "rate_kbit"}  # fmt: skip
MAX_FREEZE_S = 300


class CannotFromConsole(LocalError):
    http_status = 501
    reason = "NotImplemented"


def resolve_destination(store: Store, namespace: str, dst: str) -> tuple[str, str]:
    """(address, what it is) for a trace destination."""
    dst = dst.strip()
    try:
        return str(ipaddress.IPv4Address(dst)), "address"
    except ValueError:
        pass
    kind, _, name = dst.rpartition("/")
    if kind in ("pod", "pods", "po"):
        pod = store.get("Pod", namespace, name)
        if pod is None:
            raise NotFound(f'pod "{name}" not found in namespace {namespace!r}')
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise LocalError(f"pod {name} has no IP yet; wait until it runs")
        return str(ip), f"pod {namespace}/{name}"
    if kind not in ("", "svc", "service", "services"):
        raise LocalError(f"trace destination {dst!r}: use an IPv4 address, pod/NAME, svc/NAME "
                         "or a service's DNS name")  # fmt: skip
    for suffix in ("." + CLUSTER_DOMAIN, ".svc"):  # NAME.NS.svc.cluster.local, NAME.NS.svc
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name, _, ns = name.partition(".")
    ns = ns or namespace
    svc = store.get("Service", ns, name)
    if svc is None:
        raise NotFound(f'service "{name}" not found in namespace {ns!r}')
    ip = (svc.get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise LocalError(f"service {name} is headless (no ClusterIP); trace to a pod instead")
    return str(ip), f"service {ns}/{name}"


async def trace(agents: AgentClient, store: Store, body: Obj) -> Obj:
    """Run one probe; the hops of every node in time order."""
    src = str(body.get("source", ""))
    namespace, _, name = src.rpartition("/")
    namespace = namespace or "default"
    pod = store.get("Pod", namespace, name)
    if pod is None:
        raise NotFound(f'source pod "{src}" not found; pick a running pod')
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or not (pod.get("status") or {}).get("podIP"):
        raise LocalError(f"pod {name} is not running yet; wait until it has an IP")
    dst, what = resolve_destination(store, namespace, str(body.get("destination", "")))
    try:
        port = int(body.get("port") or 0)
    except (TypeError, ValueError):
        raise LocalError("trace: port must be a number") from None
    protocol = str(body.get("protocol") or ("TCP" if port else "ICMP")).upper()
    others = [n for n in agents.nodes() if n != node]
    for other in others:
        try:
            await agents.call("POST", other, "/flows/record", params={"seconds": "10"})
        except KnemuError:
            pass  # a node that is down just shows no hops
    probe = {"pod": f"{namespace}/{name}", "dst": dst, "port": port, "protocol": protocol,
             "wait_ms": 500}  # fmt: skip
    result = await agents.call("POST", node, "/trace", body=probe)
    hops = list(result.get("hops", []))
    sent = result["probe"]
    query = {"since": str(result["time"] - 0.001), "ip": sent["src_ip"], "limit": "200"}
    if protocol != "ICMP":
        query["port"] = str(sent["src_port"])
    unreachable = []
    for other in others:
        try:
            hops += await agents.call("GET", other, "/flows", params=query)
        except KnemuError:
            unreachable.append(other)
    hops.sort(key=lambda e: e.get("time", 0))
    return {"probe": sent, "node": node, "destination": what, "hops": hops,
            "unreachable": unreachable}  # fmt: skip


def _number(body: Obj, key: str) -> float:
    try:
        return float(body[key])
    except (KeyError, TypeError, ValueError):
        raise LocalError(f"chaos: {key} must be a number") from None


async def chaos(agents: AgentClient, body: Obj) -> list[str]:
    """Apply one chaos action; one line per node acted on, as `knemu chaos` prints."""
    action, node = str(body.get("action", "")), str(body.get("node", ""))
    peer = str(body.get("peer") or "")
    if action == "heal":
        lines = []
        for n in [node] if node else agents.nodes():
            try:
                reply = await agents.call("DELETE", n, "/chaos")
                lines.append(f"{n}: healed ({reply.get('removed', '?')} impairments removed)")
            except KnemuError as exc:
                lines.append(f"{n}: not healed ({exc.message})")
        return lines
    if not node:
        raise LocalError(f"chaos {action or '(no action)'}: choose a node")
    if action == "partition":
        spec: Obj = {"partition": True, "peer": peer, "direction": "both"}
    elif action in IMPAIRMENT_FIELDS:
        spec = {IMPAIRMENT_FIELDS[action]: _number(body, "value"), "peer": peer,
                "direction": "egress"}  # fmt: skip
    elif action == "kill":
        await agents.call("POST", node, "/lifecycle", body={"action": "kill"})
        return [f"{node}: agent and pods killed (SIGKILL); `knemu chaos start-node {node}` "
                "where the cluster runs brings it back"]  # fmt: skip
    elif action == "freeze":
        seconds = _number(body, "seconds")
        if not 1 <= seconds <= MAX_FREEZE_S:
            raise LocalError(f"chaos freeze: seconds must be between 1 and {MAX_FREEZE_S}")
        await agents.call("POST", node, "/lifecycle", body={"action": "freeze",
                                                           "seconds": seconds})  # fmt: skip
        return [f"{node}: agent frozen for {seconds:g} s; it thaws by itself"]
    elif action == "start":
        raise CannotFromConsole(
            f"start-node needs what runs the node (docker or the local process groups), which "
            f"the api-server does not hold: run `knemu chaos start-node {node}` there (a frozen "
            "node thaws by itself)"
        )
    else:
        raise LocalError(f"chaos action {action!r}: use kill, freeze, partition, delay, loss, "
                         "duplicate, corrupt, rate or heal")  # fmt: skip
    reply = await agents.call("POST", node, "/chaos", body=spec)
    what = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "direction" and v != "")
    return [f"{node}: impairment {reply.get('id', '?')} added ({what}, "
            f"direction {spec['direction']})"]  # fmt: skip
