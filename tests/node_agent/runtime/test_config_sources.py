"""ConfigMaps and Secrets in pods, the pure part: env resolution with the kubelet's order and
messages, volume files, and the atomic ``..data`` swap of a volume directory."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from knemu.node_agent.runtime import atomic_writer
from knemu.node_agent.runtime.config_sources import (
    SERVICE_ACCOUNT_DIR,
    TOKEN_KEY,
    TOKEN_VOLUME,
    NodeCapacity,
    SourceError,
    VolumeFile,
    as_sources,
    references,
    resolve_env,
    token_due,
    volume_files,
)
from knemu.node_agent.runtime.downward import PodFields
from knemu.node_agent.runtime.oci_spec import BindMount
from knemu.node_agent.runtime.volumes import PodVolumes, token_mount
from knemu.proto import knemu_pb2 as pb

CAP = NodeCapacity(cpu_millis=2000, memory_bytes=4 * 2**30)
POD = pb.Pod(metadata=pb.ObjectMeta(name="web-1", namespace="shop"), node_name="node-1")
SOURCES = {
    ("ConfigMap", "cfg"): pb.SourceObject(
        kind="ConfigMap", name="cfg", found=True, resource_version=5,
        data={"color": b"blue", "size": b"L", "ref": b"$(color)", "bad=key": b"x"},
    ),
    ("Secret", "sec"): pb.SourceObject(
        kind="Secret", name="sec", found=True, resource_version=6, data={"password": b"s3cr3t"}
    ),
    ("ConfigMap", "gone"): pb.SourceObject(kind="ConfigMap", name="gone", found=False),
    ("Secret", "nope"): pb.SourceObject(kind="Secret", name="nope", found=False),
}  # fmt: skip


def _key(name: str, kind: str, obj: str, key: str, optional: bool = False) -> pb.EnvVar:
    return pb.EnvVar(name=name, key_ref=pb.KeyRef(kind=kind, name=obj, key=key,
                                                   optional=optional))  # fmt: skip


def _env(spec: pb.Container) -> dict[str, str]:
    resolved = resolve_env(spec, POD, PodFields(POD, "10.244.1.5"), SOURCES, CAP)
    return {v.name: v.value for v in resolved.spec.env}


def test_env_from_first_then_env_which_wins_and_expands() -> None:
    spec = pb.Container(
        name="c",
        env_from=[pb.EnvFromSource(kind="ConfigMap", name="cfg", prefix="CFG_"),
                  pb.EnvFromSource(kind="ConfigMap", name="gone", optional=True)],
        env=[pb.EnvVar(name="CFG_size", value="XL"), _key("PW", "Secret", "sec", "password"),
             pb.EnvVar(name="MSG", value="$(PW)-$(CFG_color)"),
             _key("OPT", "ConfigMap", "cfg", "nokey", optional=True),
             pb.EnvVar(name="IP", field_path="status.podIP")],
    )  # fmt: skip
    env = _env(spec)
    # A ConfigMap value is not expanded ($(color) stays); env after envFrom wins.
    assert env == {"CFG_color": "blue", "CFG_ref": "$(color)", "CFG_size": "XL",
                   "PW": "s3cr3t", "MSG": "s3cr3t-blue", "IP": "10.244.1.5"}  # fmt: skip
    resolved = resolve_env(spec, POD, PodFields(POD), SOURCES, CAP)
    assert resolved.skipped == ["CFG_bad=key"] and not resolved.spec.env_from


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (_key("A", "ConfigMap", "gone", "k"), 'configmap "gone" not found'),
        (_key("A", "ConfigMap", "cfg", "k"), "couldn't find key k in ConfigMap shop/cfg"),
        (_key("A", "Secret", "sec", "user"), "couldn't find key user in Secret shop/sec"),
        (_key("A", "Secret", "unsent", "k"), "did not send it"),
    ],
)
def test_missing_objects_and_keys_name_what_is_missing(var: pb.EnvVar, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        _env(pb.Container(name="c", env=[var]))
    missing_from = pb.EnvFromSource(kind="Secret", name="nope")
    with pytest.raises(SourceError, match='secret "nope" not found'):
        _env(pb.Container(name="c", env_from=[missing_from]))


def test_resource_field_refs_round_up_in_divisor_units() -> None:
    def var(resource: str, divisor_millis: int = 0, container: str = "") -> pb.EnvVar:
        return pb.EnvVar(name=resource, resource=resource, resource_container=container,
                         resource_divisor_millis=divisor_millis)  # fmt: skip

    spec = pb.Container(
        name="c", memory_limit_bytes=64 * 2**20 + 1, cpu_limit_millis=250,
        env=[var("limits.memory", 2**20 * 1000), var("limits.cpu", 1),
             var("requests.cpu"), var("requests.memory")],
    )  # fmt: skip
    env = _env(spec)
    # 64Mi + 1 byte in Mi rounds up; 250m in "1m"; requests default to limits; cpu in
    # cores rounds 250m up to 1.
    assert env == {"limits.memory": "65", "limits.cpu": "250", "requests.cpu": "1",
                   "requests.memory": str(64 * 2**20 + 1)}  # fmt: skip
    unlimited = pb.Container(name="c", env=[var("limits.cpu"), var("limits.memory", 2**30 * 1000)])
    assert _env(unlimited) == {"limits.cpu": "2", "limits.memory": "4"}  # the node's
    with pytest.raises(SourceError, match="not supported"):
        _env(pb.Container(name="c", env=[var("limits.hugepages-2Mi")]))


def test_references_and_volume_files() -> None:
    pod = pb.Pod(
        volumes=[pb.Volume(name="v", kind="configMap", source_name="cfg"),
                 pb.Volume(name="e", kind="emptyDir")],
        containers=[pb.Container(name="c", env=[_key("A", "Secret", "sec", "k")])],
        init_containers=[pb.Container(name="i", env_from=[pb.EnvFromSource(kind="ConfigMap",
                                                                           name="init")])],
    )  # fmt: skip
    assert references(pod) == [("ConfigMap", "cfg"), ("ConfigMap", "init"), ("Secret", "sec")]
    every = pb.Volume(name="v", kind="configMap", source_name="cfg")
    assert volume_files(every, SOURCES, "shop")["color"] == VolumeFile(b"blue", 0o644)
    picked = pb.Volume(name="v", kind="secret", source_name="sec", default_mode=0o400,
                       key_items=[pb.KeyToPath(key="password", path="db/pw")])  # fmt: skip
    assert volume_files(picked, SOURCES, "shop") == {"db/pw": VolumeFile(b"s3cr3t", 0o400)}
    picked.key_items[0].mode = 0o440
    assert volume_files(picked, SOURCES, "shop")["db/pw"].mode == 0o440
    absent = pb.Volume(name="v", kind="configMap", source_name="gone")
    with pytest.raises(SourceError, match='configmap "gone" not found'):
        volume_files(absent, SOURCES, "shop")
    absent.optional = True
    assert volume_files(absent, SOURCES, "shop") == {}
    bad_key = pb.Volume(name="v", kind="configMap", source_name="cfg",
                        key_items=[pb.KeyToPath(key="nokey", path="x")])  # fmt: skip
    with pytest.raises(SourceError, match="non-existent config key: nokey"):
        volume_files(bad_key, SOURCES, "shop")
    escape = pb.Volume(name="v", kind="configMap", source_name="cfg",
                       key_items=[pb.KeyToPath(key="color", path="../../etc/x")])  # fmt: skip
    with pytest.raises(SourceError, match="must be relative"):
        volume_files(escape, SOURCES, "shop")


def test_atomic_writer_swaps_data_and_links(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    first = {"a": VolumeFile(b"1", 0o644), "dir/b": VolumeFile(b"2", 0o400)}
    assert atomic_writer.write(vol, first)
    assert not atomic_writer.write(vol, first)  # unchanged: nothing written
    assert os.readlink(vol / "a") == "..data/a" and (vol / "dir" / "b").read_bytes() == b"2"
    assert (vol / "dir" / "b").stat().st_mode & 0o777 == 0o400
    old = os.readlink(vol / "..data")
    assert atomic_writer.write(vol, {"a": VolumeFile(b"one", 0o644), "c": VolumeFile(b"3", 0o644)})
    assert atomic_writer.current(vol) == {"a": b"one", "c": b"3"}
    assert not (vol / "dir").exists() and not (vol / old).exists()
    assert sorted(p.name for p in vol.iterdir()) == sorted(
        ["..data", os.readlink(vol / "..data"), "a", "c"]
    )


def test_atomic_writer_readers_never_see_a_mix(tmp_path: Path) -> None:
    """A reader of two files sees both from one version, across many updates."""
    vol = tmp_path / "vol"
    atomic_writer.write(vol, {"x": VolumeFile(b"0", 0o644), "y": VolumeFile(b"0", 0o644)})
    stop, mixed = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                data = os.readlink(vol / "..data")
                x, y = ((vol / data / n).read_bytes() for n in ("x", "y"))
            except OSError:
                continue  # the old version was deleted under us: read again
            if x != y:
                mixed.append((x, y))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 200):
            v = str(i).encode()
            atomic_writer.write(vol, {"x": VolumeFile(v, 0o644), "y": VolumeFile(v, 0o644)})
    finally:
        stop.set()
        reader.join(10)
    assert not mixed and atomic_writer.current(vol) == {"x": b"199", "y": b"199"}


def test_token_is_renewed_after_80_percent_of_its_lifetime() -> None:
    token = pb.SourceObject(kind="ServiceAccountToken", name="default", found=True,
                            expiration_unix=4600, expiration_seconds=3600)  # fmt: skip
    reply = pb.PodSources(objects=[token, SOURCES[("ConfigMap", "cfg")]])
    assert as_sources(reply)[TOKEN_KEY] == token  # kept apart from the pod's objects
    assert token_due(None, 0) and not token_due(token, 1000 + 2879)
    assert token_due(token, 1000 + 2880)  # 80 % of an hour after it was issued
    assert not token_due(pb.SourceObject(kind="ServiceAccountToken"), 10**10)  # none mounted


def test_token_mount_unless_the_container_mounts_that_path(tmp_path: Path) -> None:
    volumes = {TOKEN_VOLUME: "/state/tok", "v": "/state/v"}
    assert token_mount(volumes, []) == [BindMount("/state/tok", SERVICE_ACCOUNT_DIR, True)]
    own = pb.VolumeMount(name="v", mount_path=SERVICE_ACCOUNT_DIR + "/")
    assert token_mount(volumes, [own]) == [] and token_mount({"v": "/state/v"}, []) == []
    files = {"token": b"jwt", "ca.crt": b"CA", "namespace": b"shop"}
    token = pb.SourceObject(kind="ServiceAccountToken", found=True, data=files)
    written = PodVolumes(tmp_path).write_sources(POD, "ns-1", {TOKEN_KEY: token})
    try:
        path = Path(written[TOKEN_VOLUME])
        assert {f: (path / f).read_bytes() for f in files} == files
        assert os.path.ismount(path)  # a tmpfs: kept off disk, as secrets are
    finally:
        PodVolumes(tmp_path).remove("ns-1")
