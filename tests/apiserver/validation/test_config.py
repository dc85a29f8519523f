"""ConfigMap, Secret, Lease and ReplicationController: defaults and Kubernetes' field errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from knemu.apiserver.admission import config_defaults
from knemu.apiserver.validation import config as cfg


def _paths(errs: list[Any]) -> list[str]:
    return [e.field for e in errs]


def test_config_map_keys_and_binary_duplicates() -> None:
    ok = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a.conf": "x", "B_2": "y"}}
    assert cfg.validate_config_map(ok) == []
    bad = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a b": "x", "n": 3},
           "binaryData": {"n": "AA=="}}  # fmt: skip
    errs = cfg.validate_config_map(bad)
    assert _paths(errs) == ["data[a b]", "data[n]", "data[n]"]
    assert "a valid config key must consist of alphanumeric characters" in errs[0].message
    huge = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "x" * (1 << 20 + 1)}}
    assert "Too long" in cfg.validate_config_map(huge)[0].message


def test_secret_string_data_is_merged_as_base64_and_type_defaults() -> None:
    secret: dict[str, Any] = {"kind": "Secret", "metadata": {"name": "s"},
                              "data": {"a": "eA=="}, "stringData": {"b": "hello"}}  # fmt: skip
    config_defaults.apply_defaults(secret)
    assert "stringData" not in secret and secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["b"]) == b"hello"
    assert cfg.validate_secret(secret) == []


def test_secret_rejects_non_base64_and_missing_typed_keys() -> None:
    bad = {"kind": "Secret", "metadata": {"name": "s"}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": "not base64!"}}  # fmt: skip
    errs = cfg.validate_secret(bad)
    assert _paths(errs) == ["data[tls.crt]", "data[tls.key]"]
    assert "must be base64 encoded" in errs[0].message and "Required value" in errs[1].message


def test_immutable_objects_keep_their_data() -> None:
    old = {"kind": "ConfigMap", "immutable": True, "data": {"a": "1"}}
    assert cfg.validate_immutable_update(old, {**old}) == []
    assert _paths(cfg.validate_immutable_update(old, {**old, "data": {"a": "2"}})) == ["data"]
    assert _paths(cfg.validate_immutable_update(old, {"data": {"a": "1"}})) == ["immutable"]


@pytest.mark.parametrize(
    ("spec", "path"),
    [({"leaseDurationSeconds": 0}, "spec.leaseDurationSeconds"),
     ({"leaseTransitions": -1}, "spec.leaseTransitions")],
)  # fmt: skip
def test_lease(spec: dict[str, Any], path: str) -> None:
    lease = {"kind": "Lease", "metadata": {"name": "node-1"}, "spec": spec}
    assert _paths(cfg.validate_lease(lease)) == [path]


def test_replication_controller_defaults_selector_and_checks_template() -> None:
    rc: dict[str, Any] = {
        "kind": "ReplicationController",
        "metadata": {"name": "rc"},
        "spec": {"template": {"metadata": {"labels": {"app": "a"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }  # fmt: skip
    config_defaults.apply_defaults(rc)
    assert rc["spec"]["selector"] == {"app": "a"} and rc["spec"]["replicas"] == 1
    assert cfg.validate_replication_controller(rc) == []
    rc["spec"]["selector"] = {"app": "b"}
    errs = cfg.validate_replication_controller(rc)
    assert _paths(errs) == ["spec.template.metadata.labels"]
