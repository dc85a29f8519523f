"""The official ``kubernetes`` Python client against the REST API with the real admission.

The client is synchronous (urllib3), so every call runs in a worker thread while the server
runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config as k8s_config, watch
from kubernetes.client.rest import ApiException

from knemu.apiserver.server import ApiServer
from knemu.apiserver.storage.store import Store
from knemu.config import ApiServerConfig
from knemu.testing import wait_for, write_kubeconfig

T = TypeVar("T")


@dataclass
class Apis:
    core: Any
    apps: Any
    discovery: Any
    store: Store

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


@pytest.fixture
async def k8s(tmp_path: Path) -> AsyncIterator[Apis]:
    """The whole api-server (controllers included) in-process on free ports."""
    config = ApiServerConfig(
        data_dir=str(tmp_path / "data"), listen="127.0.0.1:0", grpc_listen="127.0.0.1:0"
    )
    async with ApiServer(config) as server:
        assert server.store is not None
        assert server.admin is not None
        kubeconfig = write_kubeconfig(server.admin, tmp_path / "kubeconfig")
        with k8s_config.new_client_from_config(str(kubeconfig)) as api_client:
            yield Apis(
                client.CoreV1Api(api_client),
                client.AppsV1Api(api_client),
                client.DiscoveryV1Api(api_client),
                server.store,
            )


def _add_label_retrying(k8s: Apis, name: str, key: str, value: str) -> Any:
    """Read-modify-replace, retried on 409 as client-go's RetryOnConflict does: controllers
    (the scheduler, ...) write the same pod concurrently."""
    for _ in range(10):
        pod = k8s.core.read_namespaced_pod(name, "default")
        pod.metadata.labels[key] = value
        try:
            return k8s.core.replace_namespaced_pod(name, "default", pod)
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise AssertionError(f"pod {name} kept conflicting")


def v1_pod(name: str, app: str = "web") -> Any:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": app}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
    )


async def test_pods_crud(k8s: Apis) -> None:
    created = await k8s(k8s.core.create_namespaced_pod, "default", v1_pod("a"))
    assert created.metadata.uid and created.status.phase == "Pending"
    replaced = await k8s(_add_label_retrying, k8s, "a", "tier", "front")
    assert replaced.metadata.labels == {"app": "web", "tier": "front"}
    assert replaced.spec.containers[0].image == "nginx"
    stale = await k8s(k8s.core.read_namespaced_pod, "a", "default")
    stale.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(ApiException) as conflict:
        await k8s(k8s.core.replace_namespaced_pod, "a", "default", stale)
    assert conflict.value.status == 409 and "modified" in str(conflict.value.body)
    patched = await k8s(
        k8s.core.patch_namespaced_pod, "a", "default", {"metadata": {"labels": {"x": "1"}}}
    )
    assert patched.metadata.labels["x"] == "1"
    listed = await k8s(k8s.core.list_namespaced_pod, "default", label_selector="tier=front")
    assert [p.metadata.name for p in listed.items] == ["a"]
    assert int(listed.metadata.resource_version) >= int(patched.metadata.resource_version)
    await k8s(k8s.core.delete_namespaced_pod, "a", "default")
    with pytest.raises(ApiException) as missing:
        await k8s(k8s.core.read_namespaced_pod, "a", "default")
    assert missing.value.status == 404


async def test_invalid_object_is_422(k8s: Apis) -> None:
    bad = v1_pod("Bad_Name")
    with pytest.raises(ApiException) as err:
        await k8s(k8s.core.create_namespaced_pod, "default", bad)
    assert err.value.status == 422 and "Invalid" in str(err.value.body)


async def test_services_and_builtins(k8s: Apis) -> None:
    services = await k8s(k8s.core.list_service_for_all_namespaces)
    names = {(s.metadata.namespace, s.metadata.name) for s in services.items}
    assert {("default", "kubernetes"), ("kube-system", "kube-dns")} <= names
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(
            selector={"app": "web"}, ports=[client.V1ServicePort(port=8080, target_port=80)]
        ),
    )
    created = await k8s(k8s.core.create_namespaced_service, "default", svc)
    assert created.spec.cluster_ip.startswith("10.")
    namespaces = await k8s(k8s.core.list_namespace)
    assert {"default", "kube-system"} <= {n.metadata.name for n in namespaces.items}
    await k8s(k8s.core.delete_namespaced_service, "web", "default")


async def test_nodes_and_endpointslices(k8s: Apis) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"podCIDR": "10.244.1.0/24"},
    }
    await k8s(k8s.core.create_node, body)
    nodes = await k8s(k8s.core.list_node)
    assert [n.metadata.name for n in nodes.items] == ["node-1"]
    slice_body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
        "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
    }
    await k8s(k8s.discovery.create_namespaced_endpoint_slice, "default", slice_body)
    slices = await k8s(
        k8s.discovery.list_namespaced_endpoint_slice,
        "default",
        label_selector="kubernetes.io/service-name=web",
    )
    assert slices.items[0].endpoints[0].addresses == ["10.244.1.5"]


async def test_deployments_and_scale(k8s: Apis) -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sample"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "sample"}},
            "template": {
                "metadata": {"labels": {"app": "sample"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    created = await k8s(k8s.apps.create_namespaced_deployment, "default", body)
    assert created.spec.replicas == 3
    scale = await k8s(k8s.apps.read_namespaced_deployment_scale, "sample", "default")
    assert scale.spec.replicas == 3 and scale.status.selector == "app=sample"
    await k8s(
        k8s.apps.patch_namespaced_deployment_scale, "sample", "default", {"spec": {"replicas": 1}}
    )
    again = await k8s(k8s.apps.read_namespaced_deployment, "sample", "default")
    assert again.spec.replicas == 1 and again.metadata.generation == 2
    deployments = await k8s(k8s.apps.list_deployment_for_all_namespaces)
    assert [d.metadata.name for d in deployments.items] == ["sample"]


def _collect(k8s: Apis, resource_version: str, until: tuple[str, str]) -> list[tuple[str, str]]:
    """Watch pods from ``resource_version`` until the event ``until`` (bounded by 5 s)."""
    w = watch.Watch()
    seen: list[tuple[str, str]] = []
    for event in w.stream(
        k8s.core.list_namespaced_pod,
        "default",
        resource_version=resource_version,
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if seen[-1] == until:
            w.stop()
    return seen


async def test_watch_with_the_official_client(k8s: Apis) -> None:
    await k8s(k8s.core.create_namespaced_pod, "default", v1_pod("a"))
    listed = await k8s(k8s.core.list_namespaced_pod, "default")
    rv = listed.metadata.resource_version
    await k8s(k8s.core.create_namespaced_pod, "default", v1_pod("b"))
    await k8s(k8s.core.delete_namespaced_pod, "a", "default")
    seen = await k8s(_collect, k8s, rv, ("DELETED", "a"))
    # Controllers (the scheduler) may add MODIFIED events in between; order is what matters.
    assert seen[-1] == ("DELETED", "a")
    assert next(e for e in seen if e[1] == "b") == ("ADDED", "b")
    assert seen.index(("ADDED", "b")) < len(seen) - 1


async def test_watch_expired_resource_version(k8s: Apis) -> None:
    k8s.store.create(v1_dict("x"), 0.0)
    with pytest.raises(ApiException) as err:
        await k8s(_collect, k8s, str(k8s.store.resource_version + 100), ("", ""))
    assert err.value.status == 410


def v1_dict(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }


async def test_controller_made_objects_deserialize(k8s: Apis) -> None:
    """Objects written by controllers and the recorder parse with the client's typed models."""
    await k8s(k8s.core.create_namespaced_pod, "default", v1_pod("lonely"))  # no node: an event
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    await k8s(k8s.apps.create_namespaced_deployment, "default", deploy)

    async def replica_sets() -> Any:
        return (await k8s(k8s.apps.list_namespaced_replica_set, "default")).items

    await wait_for(replica_sets, 20, what="the Deployment's ReplicaSet")
    events = await k8s(k8s.core.list_event_for_all_namespaces)
    assert all(e.involved_object is not None for e in events.items)
    await k8s(k8s.core.list_endpoints_for_all_namespaces)
    await k8s(k8s.discovery.list_endpoint_slice_for_all_namespaces)
    await k8s(k8s.apps.list_replica_set_for_all_namespaces)
    await k8s(k8s.apps.read_namespaced_deployment_status, "d", "default")
    pods = await k8s(k8s.core.list_pod_for_all_namespaces)
    assert "lonely" in {p.metadata.name for p in pods.items}
