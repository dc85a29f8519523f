"""Strategic merge patch: cases from the upstream design document
(kubernetes/community sig-api-machinery/strategic-merge-patch.md) on the kinds knemu serves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from knemu.apiserver.rest.patches import STRATEGIC_PATCH, apply_patch
from knemu.apiserver.rest.strategic import BadPatch, strategic_merge_patch

POD: dict[str, Any] = {
    "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
    "spec": {
        "containers": [
            {
                "name": "nginx",
                "image": "nginx:1.16",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            },
            {"name": "sidecar", "image": "busybox", "args": ["sleep", "1"]},
        ],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
}


def test_containers_merge_by_name_and_keep_the_others() -> None:
    patch = {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.17"}]}}
    out = strategic_merge_patch(POD, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["nginx", "sidecar"]
    nginx = out["spec"]["containers"][0]
    assert (
        nginx["image"] == "nginx:1.17" and nginx["ports"] == POD["spec"]["containers"][0]["ports"]
    )
    assert POD["spec"]["containers"][0]["image"] == "nginx:1.16"  # the target is not modified


def test_new_elements_are_appended_and_nested_lists_merge_by_their_own_keys() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "nginx",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                },
                {"name": "third", "image": "x"},
            ]
        }
    }
    out = strategic_merge_patch(POD, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["nginx", "sidecar", "third"]
    env = out["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]


def test_ports_key_on_container_port_in_pods_and_port_in_services() -> None:
    patch = {
        "spec": {
            "containers": [{"name": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}]
        }
    }
    ports = strategic_merge_patch(POD, patch)["spec"]["containers"][0]["ports"]
    assert ports == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 80}, {"port": 443, "targetPort": 8443}]}}
    out = strategic_merge_patch(svc, {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}})
    assert out["spec"]["ports"] == [
        {"port": 80, "targetPort": 80, "nodePort": 30080},
        {"port": 443, "targetPort": 8443},
    ]


def test_delete_directives() -> None:
    patch = {
        "spec": {
            "containers": [
                {"name": "sidecar", "$patch": "delete"},
                {"name": "nginx", "env": [{"name": "A", "$patch": "delete"}]},
            ]
        },
        "metadata": {"labels": {"$patch": "delete"}},
    }
    out = strategic_merge_patch(POD, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["nginx"]
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert "labels" not in out["metadata"]


def test_replace_directives_and_lists_without_a_key_are_replaced() -> None:
    patch = {
        "spec": {
            "containers": [{"$patch": "replace"}, {"name": "only", "image": "y"}],
            "tolerations": [{"key": "other", "operator": "Exists"}],
        },
        "metadata": {"labels": {"$patch": "replace", "tier": "front"}},
    }
    out = strategic_merge_patch(POD, patch)
    assert out["spec"]["containers"] == [{"name": "only", "image": "y"}]
    assert out["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]
    assert out["metadata"]["labels"] == {"tier": "front"}
    args = strategic_merge_patch(
        POD, {"spec": {"containers": [{"name": "sidecar", "args": ["x"]}]}}
    )
    assert args["spec"]["containers"][1]["args"] == ["x"]


def test_null_deletes_primitive_lists_merge_and_delete_from_them() -> None:
    out = strategic_merge_patch(
        POD, {"metadata": {"labels": {"app": None}, "finalizers": ["b", "a"]}}
    )
    assert out["metadata"]["labels"] == {} and out["metadata"]["finalizers"] == ["a", "b"]
    out = strategic_merge_patch(POD, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert out["metadata"]["finalizers"] == []


def test_retain_keys_and_set_element_order() -> None:
    target = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert strategic_merge_patch(target, patch) == {"spec": {"strategy": {"type": "Recreate"}}}
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}],
            "containers": [{"name": "nginx", "image": "z"}],
        }
    }
    out = strategic_merge_patch(POD, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["sidecar", "nginx"]


def test_malformed_patches_are_bad_requests_naming_the_problem() -> None:
    with pytest.raises(BadPatch, match="lacks its key 'name'"):
        strategic_merge_patch(POD, {"spec": {"containers": [{"image": "x"}]}})
    with pytest.raises(BadPatch, match="unknown \\$patch directive 'explode'"):
        strategic_merge_patch(POD, {"spec": {"$patch": "explode"}})
    with pytest.raises(BadPatch, match="must be a list"):
        strategic_merge_patch(POD, {"spec": {"$retainKeys": "containers"}})
    with pytest.raises(BadPatch):
        strategic_merge_patch(POD, ["not", "an", "object"])
    assert BadPatch("x").http_status == 400


def test_the_rest_layer_uses_it_for_its_content_type() -> None:
    body = json.dumps({"spec": {"containers": [{"name": "nginx", "image": "nginx:1.17"}]}})
    out = apply_patch(POD, body.encode(), STRATEGIC_PATCH + "; charset=utf-8")
    assert len(out["spec"]["containers"]) == 2


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "image", "$patch", "containers", "ports", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, _JSON)
def test_any_input_either_patches_or_is_a_bad_request(target: Any, patch: Any) -> None:
    try:
        strategic_merge_patch(target, patch)
    except BadPatch:
        pass
