"""Admission never crashes: any JSON is admitted or rejected with a KnemuError."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from knemu.errors import KnemuError

from ..cluster import Cluster, load_yaml

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.sampled_from(["", "x", "None", "TCP", "http", "10.96.0.7", "a=b"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "port",
                    "targetPort",
                    "protocol",
                    "nodePort",
                    "containers",
                    "ports",
                    "image",
                    "matchLabels",
                    "selector",
                    "labels",
                    "metadata",
                    "spec",
                    "template",
                    "type",
                    "clusterIP",
                    "containerPort",
                    "key",
                    "operator",
                    "values",
                    "matchExpressions",
                    "replicas",
                    "strategy",
                    "rollingUpdate",
                    "maxSurge",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
SEEDS = {
    "Service": load_yaml("sample-clusterip-multi.yaml")[0],
    "Deployment": load_yaml("sample-deployment.yaml")[0],
    "Pod": load_yaml("sample-named-port-pods.yaml")[0],
}


def _mutate(obj: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    if isinstance(obj, dict):
        return {**obj, path[0]: _mutate(obj.get(path[0]), path[1:], value)}
    return {path[0]: _mutate(None, path[1:], value)}


PATHS = st.sampled_from(
    [
        ["spec"], ["spec", "ports"], ["spec", "selector"], ["spec", "template"],
        ["spec", "template", "spec", "containers"], ["spec", "containers"], ["metadata"],
        ["metadata", "labels"], ["spec", "strategy"], ["spec", "clusterIP"], ["spec", "type"],
        ["spec", "sessionAffinityConfig"], ["spec", "replicas"], ["metadata", "name"],
    ]
)  # fmt: skip


@settings(
    max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.sampled_from(sorted(SEEDS)), path=PATHS, value=JSON)
def test_admission_rejects_garbage_cleanly(
    cluster: Cluster, kind: str, path: list[str], value: Any
) -> None:
    obj = _mutate(SEEDS[kind], path, value)
    try:
        admitted = cluster.admission.admit_create(obj, cluster.now)
    except KnemuError:
        return
    assert admitted["kind"] == kind
