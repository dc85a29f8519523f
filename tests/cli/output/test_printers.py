"""kubectl-compatible tables, ages and -o formats (pure functions on dicts)."""

from __future__ import annotations

import json

import pytest
import yaml

from knemu.cli.client import resolve_kind
from knemu.cli.output.formats import print_custom_columns, print_json, print_names, print_yaml
from knemu.cli.output.printers import (
    TableOptions,
    endpoints_addresses,
    format_table,
    human_age,
    print_table,
    service_external_ip,
    service_ports,
)
from knemu.errors import LocalError

NOW = 1_700_000_000.0
T0 = "2023-11-14T22:11:41Z"  # NOW - 99 s


def _pod(name: str, ip: str, created: str = T0, phase: str = "Running") -> dict:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "creationTimestamp": created,
            "labels": {"app": "sample-app"},
        },
        "spec": {"nodeName": "k8s-worker1", "containers": [{"name": "nginx-container"}]},
        "status": {
            "phase": phase,
            "podIP": ip,
            "containerStatuses": [
                {
                    "name": "nginx-container",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {}},
                }
            ],
        },
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (99, "99s"),
        (115, "115s"),
        (120, "2m"),
        (276, "4m36s"),
        (600, "10m"),
        (10799, "179m"),
        (10800, "3h"),
        (5 * 3600 + 60, "5h1m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 3600, "3d1h"),
        (8 * 86400, "8d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_age_matches_kubectl(seconds: int, text: str) -> None:
    assert human_age(seconds) == text


def test_pod_table_is_laid_out_like_the_seed() -> None:
    pods = [_pod(f"sample-deployment-7c67dd9675-{s}", "10.244.1.2") for s in ("jggr7", "mqc7v")]
    out = print_table(resolve_kind("po"), pods, NOW, TableOptions())
    assert out == (
        "NAME                                 READY   STATUS    RESTARTS   AGE\n"
        "sample-deployment-7c67dd9675-jggr7   1/1     Running   0          99s\n"
        "sample-deployment-7c67dd9675-mqc7v   1/1     Running   0          99s\n"
    )


def test_pod_wide_adds_ip_node_and_gates() -> None:
    pod = _pod("sample-named-port-pod-80", "172.30.194.78", "2023-11-14T22:08:44Z")
    out = print_table(resolve_kind("pods"), [pod], NOW, TableOptions(wide=True))
    header, row = out.splitlines()
    assert header.split() == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    assert row.split() == [
        "sample-named-port-pod-80",
        "1/1",
        "Running",
        "0",
        "4m36s",
        "172.30.194.78",
        "k8s-worker1",
        "<none>",
        "<none>",
    ]


def test_pod_status_reasons() -> None:
    pod = _pod("p", "")
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    pod["status"]["containerStatuses"][0]["ready"] = False
    row = print_table(resolve_kind("pods"), [pod], NOW, TableOptions(headers=False))
    assert row.split()[1:3] == ["0/1", "ContainerCreating"]
    pod["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 2}}
    assert "ExitCode:2" in print_table(resolve_kind("pods"), [pod], NOW, TableOptions())
    pod["metadata"]["deletionTimestamp"] = T0
    assert "Terminating" in print_table(resolve_kind("pods"), [pod], NOW, TableOptions())


def test_service_ports_external_ip_and_row() -> None:
    svc = {
        "metadata": {"name": "sample-clusterip", "creationTimestamp": "2023-11-14T22:13:07Z"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.97.91.208",
            "ports": [{"port": 8080, "protocol": "TCP", "targetPort": 80}],
        },
    }
    out = print_table(resolve_kind("svc"), [svc], NOW, TableOptions())
    assert out == (
        "NAME               TYPE        CLUSTER-IP     EXTERNAL-IP   PORT(S)    AGE\n"
        "sample-clusterip   ClusterIP   10.97.91.208   <none>        8080/TCP   13s\n"
    )
    node_port = {"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30008}]}}
    assert service_ports(node_port) == "80:30008/TCP"
    lb = {"spec": {"type": "LoadBalancer"}}
    assert service_external_ip(lb) == "<pending>"
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.127"}]}}
    assert service_external_ip(lb) == "192.0.2.127"
    assert service_ports({"spec": {}}) == "<none>"


def test_all_namespaces_and_labels_columns() -> None:
    out = print_table(
        resolve_kind("pods"),
        [_pod("a", "")],
        NOW,
        TableOptions(all_namespaces=True, show_labels=True),
    )
    header, row = out.splitlines()
    assert header.split()[0] == "NAMESPACE" and header.split()[-1] == "LABELS"
    assert row.split()[0] == "default" and row.split()[-1] == "app=sample-app"


def test_endpoints_formatting_limits_like_kubectl() -> None:
    ep = {
        "subsets": [
            {
                "addresses": [{"ip": f"10.244.1.{i}"} for i in range(2, 7)],
                "ports": [{"name": "http", "port": 80}],
            }
        ]
    }
    assert endpoints_addresses(ep) == ("10.244.1.2:80,10.244.1.3:80,10.244.1.4:80 + 2 more...")
    assert endpoints_addresses(ep, {"other"}) == "<none>"
    assert endpoints_addresses(ep, {"http"}, limit=0).count(",") == 4
    assert endpoints_addresses({}) == "<none>"


def test_other_kinds_have_kubectl_columns() -> None:
    tables = {
        "deploy": "NAME READY UP-TO-DATE AVAILABLE AGE",
        "rs": "NAME DESIRED CURRENT READY AGE",
        "no": "NAME STATUS ROLES AGE VERSION",
        "ep": "NAME ENDPOINTS AGE",
        "endpointslices": "NAME ADDRESSTYPE PORTS ENDPOINTS AGE",
        "ns": "NAME STATUS AGE",
        "ev": "LAST SEEN TYPE REASON OBJECT MESSAGE",
    }
    obj = {"metadata": {"name": "x", "creationTimestamp": T0}}
    for alias, header in tables.items():
        out = print_table(resolve_kind(alias), [obj], NOW, TableOptions())
        assert out.splitlines()[0].split() == header.split(), alias
    node = {
        "metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/worker": ""}},
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.59.11"}],
        },
    }
    row = print_table(resolve_kind("nodes"), [node], NOW, TableOptions(wide=True)).splitlines()[1]
    assert row.split()[:3] == ["node-1", "NotReady,SchedulingDisabled", "worker"]
    assert "192.168.59.11" in row


def test_custom_columns_braces_and_dot_forms() -> None:
    pods = [_pod("a", "10.244.1.2"), _pod("bb", "")]
    del pods[1]["status"]["podIP"]
    out = print_custom_columns("NAME:{metadata.name},IP:{status.podIP}", pods)
    assert out == "NAME   IP\na      10.244.1.2\nbb     <none>\n"
    assert print_custom_columns("N:.metadata.name,L:.metadata.labels", pods[:1]) == (
        "N   L\na   map[app:sample-app]\n"
    )
    with pytest.raises(LocalError):
        print_custom_columns("NAME", pods)


def test_json_yaml_name_outputs() -> None:
    pod = _pod("a", "10.244.1.2")
    assert json.loads(print_json(pod)) == pod
    assert print_json(pod).startswith('{\n    "kind"')  # 4-space indent, sorted keys
    assert yaml.safe_load(print_yaml(pod)) == pod
    assert print_names(resolve_kind("deploy"), [pod]) == "deployment.apps/a\n"
    assert print_names(resolve_kind("po"), [pod]) == "pod/a\n"


def test_format_table_pads_three_and_trims_last_column() -> None:
    assert format_table(["A", "BBB"], [["xx", ""]]) == "A    BBB\nxx\n"
