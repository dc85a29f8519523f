"""Node registry: registration, leases, pod status reports and events from node agents.

A node agent plays kubelet.  It registers (kubelet's "self-registration of nodes",
https://kubernetes.io/docs/concepts/architecture/nodes/#self-registration-of-nodes), renews
a lease (the kube-node-lease Lease objects of "node heartbeats"; here kept in memory: after an
api-server restart every node counts as renewed at that moment), and reports its pods'
status.  The Node object carries what peers need for the overlay, as flannel publishes it:
the annotations ``flannel.alpha.coreos.com/backend-data`` ({"VNI":1,"VtepMAC":...}) and
``flannel.alpha.coreos.com/public-ip``, plus ``knemu.dev/vxlan-port``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import ipaddress
import json
import re
import statistics
from collections.abc import Mapping
from typing import Any

from knemu.apiserver import ipam
from knemu.apiserver.meta import naming
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store
from knemu.config import (
    BACKEND_LABEL,
    NETWORK_BACKENDS,
    VNI,
    WIREGUARD_KEY_ANNOTATION,
    ApiServerConfig,
)
from knemu.errors import LocalError, NotFound

Obj = dict[str, Any]
IDENTITY_LABEL = "knemu.dev/identity"
IDENTITY_ANNOTATION = "knemu.dev/identity"
VXLAN_PORT_ANNOTATION = "knemu.dev/vxlan-port"
BACKEND_DATA = "flannel.alpha.coreos.com/backend-data"
BACKEND_TYPE = "flannel.alpha.coreos.com/backend-type"
PUBLIC_IP = "flannel.alpha.coreos.com/public-ip"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
REPORTS_KEPT = 65536  # pods whose last reported readiness is remembered
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def condition(obj: Obj, ctype: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def is_ready(obj: Obj) -> bool:
    cond = condition(obj, "Ready")
    return cond is not None and cond.get("status") == "True"


def set_condition(obj: Obj, ctype: str, status: str, reason: str, message: str, now: float) -> None:
    """Set a condition, moving lastTransitionTime only when the status changes."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    cond = condition(obj, ctype)
    if cond is None:
        cond = {"type": ctype}
        conditions.append(cond)
    if cond.get("status") != status:
        cond["lastTransitionTime"] = naming.rfc3339(now)
    cond.update(status=status, reason=reason, message=message)
    if obj.get("kind") == "Node":
        cond["lastHeartbeatTime"] = cond["lastTransitionTime"]


def identity_label(identity: str) -> str:
    """The identity as a label value (hashed when it is not a valid one, e.g. 64 hex chars)."""
    if identity and not naming.label_value(identity):
        return identity
    return "h" + hashlib.sha256(identity.encode()).hexdigest()[:40]


def _check_inputs(internal_ip: str, vtep_mac: str, vxlan_port: int, kubelet_port: int) -> None:
    try:
        ipaddress.ip_address(internal_ip)
    except ValueError:
        raise LocalError(
            f"node registration: internal_ip {internal_ip!r} is not an IP address"
        ) from None
    if not _MAC.fullmatch(vtep_mac):
        raise LocalError(
            f"node registration: vtep_mac {vtep_mac!r} is not a MAC like 02:42:ac:11:00:02"
        )
    for what, port in (("vxlan_port", vxlan_port), ("kubelet_port", kubelet_port)):
        if not 1 <= port <= 65535:
            raise LocalError(f"node registration: {what} {port} is not between 1 and 65535")


def _check_public_key(key: str) -> None:
    """A WireGuard public key is 32 bytes in base64 (44 characters)."""
    if not key:
        return
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise LocalError(
            f"node registration: wireguard_public_key {key[:60]!r} is not a base64 X25519 key "
            "(32 bytes); the agent makes its own with --encryption wireguard"
        )


class NodeRegistry:
    """Registration, in-memory leases, pod status reports (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        config: ApiServerConfig,
        recorder: EventRecorder,
        capacity: Mapping[str, str] | None = None,
    ) -> None:
        # cpu and memory of the machine the nodes run on (they share it: namespaces or
        # containers of one host), for status.capacity and `kubectl top nodes` percentages
        self._capacity = {"pods": "110", **(capacity or {})}
        self._store = store
        self._config = config
        self._recorder = recorder
        self._renewed: dict[str, float] = {}
        self._reported_ready: dict[str, bool] = {}  # pod uid -> Ready as its node last said

    # ---- leases ------------------------------------------------------------------------------

    def last_renew(self, name: str, now: float) -> float:
        """When ``name`` last renewed; a node never seen since start counts as renewed now."""
        return self._renewed.setdefault(name, now)

    def discount_unobserved(self, since: float, until: float) -> None:
        """The api-server could not hear heartbeats from ``since`` to ``until`` (it did not
        run): that time does not count toward the grace of nodes that were healthy when it
        began.  Kubernetes counts grace from the controller's own observation (probeTimestamp);
        this is the same rule for a control plane that stalls as a whole."""
        gap = until - since
        grace = self._config.timings.node_grace_s
        for name, renewed in self._renewed.items():
            if gap > 0 and since - renewed < grace:
                self._renewed[name] = min(until, renewed + gap)

    def observed_until(self, now: float) -> float:
        """The moment up to which the api-server has heard the nodes: the (upper) median of
        their latest heartbeats, by when each was sent, or ``now`` less one grace period if
        that is later.

        Node lifecycle judges silence against this, not against the wall clock: heartbeats
        queued behind a busy api-server, or read from some connections and not yet from
        others, are not silence (Kubernetes counts grace from its own observation,
        probeTimestamp).  A node that stops while most keep renewing is judged as usual; when
        most nodes fall silent at once, they are declared lost one grace period later."""
        grace = self._config.timings.node_grace_s
        heard = statistics.median_high(self._renewed.values()) if self._renewed else 0.0
        return max(heard, now - grace)

    def renew(self, name: str, now: float, sent_at: float = 0.0) -> bool:
        """Renew ``name``'s lease (sent by the node at ``sent_at``, 0: unknown); False when
        the Node object is gone (register again)."""
        node = self._store.get("Node", "", name)
        if node is None:
            self._renewed.pop(name, None)
            return False
        # Alive when it sent the heartbeat; a clock that disagrees by more than a grace
        # period (another host's) is not believed.
        grace = self._config.timings.node_grace_s
        alive_at = sent_at if now - grace < sent_at <= now else now
        self._renewed[name] = max(self._renewed.get(name, alive_at), alive_at)
        if not is_ready(node):
            self._mark_ready(node, now)
        return True

    def _mark_ready(self, node: Obj, now: float) -> None:
        name = node["metadata"]["name"]
        set_condition(node, "Ready", "True", "KubeletReady", "kubelet is posting ready status", now)
        taints = [
            t for t in node.get("spec", {}).get("taints") or [] if t.get("key") != UNREACHABLE_TAINT
        ]
        node.setdefault("spec", {})["taints"] = taints
        self._store.update(node, now)
        self._recorder.record(
            node, "Normal", "NodeReady", f"Node {name} status is now: NodeReady", now
        )
        self._restore_pods(name, now)

    def _restore_pods(self, node_name: str, now: float) -> None:
        """Pods the lifecycle controller marked not ready get their reported readiness back."""
        for pod in self._store.list("Pod"):
            if (pod.get("spec") or {}).get("nodeName") != node_name:
                continue
            ready = self._reported_ready.get(pod["metadata"].get("uid", ""))
            cond = condition(pod, "Ready")
            if ready and cond is not None and cond.get("status") != "True":
                set_condition(pod, "Ready", "True", "", "", now)
                self._store.update(pod, now)

    # ---- registration ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        identity: str,
        internal_ip: str,
        vtep_mac: str,
        vxlan_port: int,
        kubelet_port: int,
        labels: dict[str, str],
        now: float,
        wireguard_public_key: str = "",
    ) -> Obj:
        """Create or refresh a Node; empty ``name``: same node for the same identity, else
        the lowest free node-N (podCIDR 10.244.N.0/24).  ``wireguard_public_key`` is published
        as Calico's annotation (removed when empty: the node no longer encrypts)."""
        _check_inputs(internal_ip, vtep_mac, vxlan_port, kubelet_port)
        _check_public_key(wireguard_public_key)
        backend = labels.get(BACKEND_LABEL, "vxlan")
        if backend not in NETWORK_BACKENDS:
            raise LocalError(
                f"label {BACKEND_LABEL}={backend!r}: not one of {', '.join(NETWORK_BACKENDS)}; "
                "start the agent with a supported --backend"
            )
        if not name and identity:
            name = self._name_for_identity(identity)
        name, pod_cidr = ipam.choose_node(self._store, self._config, name)
        if errs := naming.dns1123_subdomain(name):
            raise LocalError(f"node name {name!r} is invalid: {'; '.join(errs)}")
        existing = self._store.get("Node", "", name)
        node = existing or {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {},
        }
        self._fill(node, identity, internal_ip, vtep_mac, vxlan_port, kubelet_port, labels)
        annotations = node["metadata"]["annotations"]
        if wireguard_public_key:
            annotations[WIREGUARD_KEY_ANNOTATION] = wireguard_public_key
        else:
            annotations.pop(WIREGUARD_KEY_ANNOTATION, None)
        self._set_registered_spec(node, pod_cidr, now)
        self._renewed[name] = now
        if existing is None:
            stored = self._store.create(node, now)
            message = f"Node {name} event: Registered Node {name} in Controller"
            self._recorder.record(
                stored, "Normal", "RegisteredNode", message, now, component="node-controller"
            )
            return stored
        return self._store.update(node, now)

    @staticmethod
    def _set_registered_spec(node: Obj, pod_cidr: str, now: float) -> None:
        spec = node["spec"]
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = [pod_cidr]
        spec["taints"] = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE_TAINT]
        # Not Ready until the agent, fully up (router, pods, kubelet API), renews its lease: a
        # registration is not yet a working node (the kubelet posts NodeReady the same way).
        set_condition(node, "Ready", "False", "KubeletNotReady", "node agent is starting", now)
        message = "knemu agent is running on this node"
        set_condition(node, "NetworkUnavailable", "False", "FlannelIsUp", message, now)

    def _name_for_identity(self, identity: str) -> str:
        for node in self._store.list("Node"):
            annotations = node["metadata"].get("annotations") or {}
            if annotations.get(IDENTITY_ANNOTATION) == identity:
                return str(node["metadata"]["name"])
        return ""

    def _fill(
        self,
        node: Obj,
        identity: str,
        internal_ip: str,
        vtep_mac: str,
        vxlan_port: int,
        kubelet_port: int,
        labels: dict[str, str],
    ) -> None:
        meta, name = node["metadata"], node["metadata"]["name"]
        node_labels = meta.setdefault("labels", {})
        node_labels.update(labels)
        node_labels.update({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"})
        if identity:
            node_labels[IDENTITY_LABEL] = identity_label(identity)
        annotations = meta.setdefault("annotations", {})
        annotations.update(
            {
                BACKEND_DATA: json.dumps({"VNI": VNI, "VtepMAC": vtep_mac}, separators=(",", ":")),
                # the node's pod network backend (vxlan | ipip), as flannel publishes it
                BACKEND_TYPE: node_labels.get(BACKEND_LABEL, "vxlan"),
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                PUBLIC_IP: internal_ip,
                VXLAN_PORT_ANNOTATION: str(vxlan_port),
                "node.alpha.kubernetes.io/ttl": "0",
            }
        )
        if identity:
            annotations[IDENTITY_ANNOTATION] = identity
        status = node.setdefault("status", {})
        status["addresses"] = [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": name},
        ]
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": kubelet_port}}
        status["capacity"] = {**(status.get("capacity") or {}), **self._capacity}
        status["allocatable"] = {**(status.get("allocatable") or {}), **self._capacity}
        status["nodeInfo"] = {
            "kubeletVersion": "knemu",
            "kubeProxyVersion": "knemu",
            "operatingSystem": "linux",
        }

    # ---- pods and events ---------------------------------------------------------------------

    def report_pod_status(self, report: dict[str, Any], now: float) -> bool:
        """Apply a node's PodStatusReport; False when the pod is gone or has another uid."""
        pod = self._store.get(
            "Pod", str(report.get("namespace") or "default"), str(report.get("name"))
        )
        if pod is None or pod["metadata"].get("uid") != report.get("uid"):
            return False
        node_name = (pod.get("spec") or {}).get("nodeName")
        if report.get("node_name") and node_name != report.get("node_name"):
            return False
        node = self._store.get("Node", "", str(node_name or ""))
        self._reported_ready[str(report.get("uid"))] = bool(report.get("ready"))
        while len(self._reported_ready) > REPORTS_KEPT:  # oldest first: gone pods age out
            del self._reported_ready[next(iter(self._reported_ready))]
        pod["status"] = build_pod_status(pod, node, report, now)
        try:
            self._store.update(pod, now)
        except NotFound:
            return False
        return True

    def record_event(self, report: dict[str, Any], now: float) -> None:
        """Record an EventReport from an agent (kubelet events: Pulled, Started, Failed ...)."""
        kind = str(report.get("involved_kind") or "Pod")
        ns = (
            ""
            if kind in ("Node", "Namespace")
            else str(report.get("involved_namespace") or "default")
        )
        name = str(report.get("involved_name") or "")
        obj = self._store.get(kind, ns, name)
        involved = obj if obj is not None else {"kind": kind, "namespace": ns, "name": name}
        source = str(report.get("source") or "kubelet")
        component, _, host = source.partition("/")
        etype = "Warning" if report.get("type") == "Warning" else "Normal"
        self._recorder.record(
            involved,
            etype,
            str(report.get("reason") or ""),
            str(report.get("message") or ""),
            now,
            component=component,
            host=host,
        )


# ---- pod status from a PodStatusReport (kubelet's generateAPIPodStatus) -------------------


def _container_state(cs: dict[str, Any], old: Obj | None, now: float) -> Obj:
    state, started = cs.get("state"), str(cs.get("started_at") or naming.rfc3339(now))
    if state == "running":
        return {"running": {"startedAt": started}}
    if state == "terminated":
        old_term = ((old or {}).get("state") or {}).get("terminated") or {}
        code = int(cs.get("exit_code") or 0)
        term = {
            "exitCode": code,
            "reason": cs.get("reason") or ("Completed" if code == 0 else "Error"),
            "startedAt": started,
            "finishedAt": old_term.get("finishedAt") or naming.rfc3339(now),
        }
        if cs.get("message"):
            term["message"] = cs["message"]
        return {"terminated": term}
    waiting = {"reason": cs.get("reason") or "ContainerCreating"}
    if cs.get("message"):
        waiting["message"] = cs["message"]
    return {"waiting": waiting}


def _last_state(cs: dict[str, Any]) -> Obj:
    """lastState.terminated of a restarted container, from the node's report."""
    if not cs.get("has_last_state"):
        return {}
    term: Obj = {"exitCode": int(cs.get("last_exit_code") or 0),
                 "reason": cs.get("last_reason") or "Error"}  # fmt: skip
    for key, field in (("startedAt", "last_started_at"), ("finishedAt", "last_finished_at")):
        if cs.get(field):
            term[key] = cs[field]
    return {"terminated": term}


def _container_statuses(
    pod: Obj, report: dict[str, Any], now: float, init: bool = False
) -> list[Obj]:
    uid = str(pod["metadata"].get("uid", ""))
    key = "initContainerStatuses" if init else "containerStatuses"
    olds = {c.get("name"): c for c in (pod.get("status") or {}).get(key) or []}
    out = []
    for cs in report.get("container_statuses") or []:
        if bool(cs.get("init")) != init:
            continue
        name = str(cs.get("name") or "")
        state = _container_state(cs, olds.get(name), now)
        out.append(
            {
                "name": name,
                "image": cs.get("image") or "",
                "imageID": "",
                "containerID": f"knemu://{uid}/{name}",
                "ready": bool(cs.get("ready")),
                "restartCount": int(cs.get("restart_count") or 0),
                "started": "running" in state and cs.get("started") is not False,
                "state": state,
                "lastState": _last_state(cs) or (olds.get(name) or {}).get("lastState") or {},
            }
        )
    return out


def build_pod_status(pod: Obj, node: Obj | None, report: dict[str, Any], now: float) -> Obj:
    """The pod's new status: phase, IPs, conditions, containerStatuses, startTime."""
    status = copy.deepcopy(pod.get("status") or {})
    status["phase"] = str(report.get("phase") or "Pending")
    for key, value in (("podIP", report.get("pod_ip")), ("hostIP", _internal_ip(node))):
        if value:
            status[key] = value
            status[key + "s"] = [{"ip": value}]
        else:
            status.pop(key, None)
            status.pop(key + "s", None)
    status.setdefault("startTime", naming.rfc3339(now))
    for key in ("reason", "message"):
        if report.get(key):
            status[key] = str(report[key])
        else:
            status.pop(key, None)
    containers = _container_statuses(pod, report, now)
    status["containerStatuses"] = containers
    inits = _container_statuses(pod, report, now, init=True)
    if inits:
        status["initContainerStatuses"] = inits
    pending_inits = [c["name"] for c in inits if "terminated" not in c["state"]
                     or c["state"]["terminated"].get("exitCode") != 0]  # fmt: skip
    unready = [c["name"] for c in containers if not c["ready"]]
    view: Obj = {"kind": "Pod", "status": status}
    ready = bool(report.get("ready"))
    not_ready_msg = f"containers with unready status: [{' '.join(unready)}]"
    if pending_inits:
        message = f"containers with incomplete status: [{' '.join(pending_inits)}]"
        set_condition(view, "Initialized", "False", "ContainersNotInitialized", message, now)
    else:
        set_condition(view, "Initialized", "True", "", "", now)
    set_condition(
        view,
        "Ready",
        _tf(ready),
        "" if ready else "ContainersNotReady",
        "" if ready else not_ready_msg,
        now,
    )
    all_ready = bool(containers) and not unready
    set_condition(
        view,
        "ContainersReady",
        _tf(all_ready),
        "" if all_ready else "ContainersNotReady",
        "" if all_ready else not_ready_msg,
        now,
    )
    set_condition(view, "PodScheduled", "True", "", "", now)
    return status


def _tf(value: bool) -> str:
    return "True" if value else "False"


def _internal_ip(node: Obj | None) -> str:
    for addr in ((node or {}).get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            return str(addr.get("address") or "")
    return ""
