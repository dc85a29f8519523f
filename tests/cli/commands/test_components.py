"""`knemu apiserver|agent|dns` flags -> config dataclasses (table driven, every field)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from knemu.cli import main
from knemu.cli.commands.components import add_config_arguments, build_config, field_flags
from knemu.config import AgentConfig, ApiServerConfig, DnsConfig, Timings
from knemu.errors import ConfigError


def _build(cls: type, argv: list[str]) -> object:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return build_config(cls, parser.parse_args(argv))


@pytest.mark.parametrize("cls", [ApiServerConfig, AgentConfig, DnsConfig])
def test_every_field_has_a_flag(cls: type) -> None:
    paths = {f.path for f in field_flags(cls)}
    expected = set()
    for f in dataclasses.fields(cls):
        if f.name == "timings":
            expected |= {f"timings.{t.name}" for t in dataclasses.fields(Timings)}
        else:
            expected.add(f.name)
    assert paths == expected


def test_apiserver_flags_and_timings_preset() -> None:
    cfg = _build(
        ApiServerConfig,
        [
            "--data-dir",
            "/d",
            "--listen",
            "0.0.0.0:7443",
            "--timings",
            "kubernetes",
            "--node-grace-s",
            "50",
        ],
    )
    assert isinstance(cfg, ApiServerConfig)
    assert cfg.data_dir == "/d" and cfg.listen == "0.0.0.0:7443"
    assert cfg.timings == Timings(
        lease_renew_s=10.0,
        node_grace_s=50.0,
        eviction_toleration_s=300.0,
        node_eviction_qps=0.1,  # --node-eviction-rate and --secondary-node-eviction-rate
        secondary_eviction_qps=0.01,
    )
    assert _build(ApiServerConfig, []) == ApiServerConfig()


def test_cert_sans_are_a_repeatable_flag() -> None:
    cfg = _build(ApiServerConfig, ["--cert-sans", "apiserver", "--cert-sans", "10.0.0.7"])
    assert isinstance(cfg, ApiServerConfig) and cfg.cert_sans == ("apiserver", "10.0.0.7")
    with pytest.raises(ConfigError, match="cert_sans"):
        ApiServerConfig(cert_sans="apiserver").validate()  # type: ignore[arg-type]


def test_agent_flags_with_aliases_and_choices() -> None:
    cfg = _build(
        AgentConfig,
        [
            "--apiserver",
            "10.0.0.1:6444",
            "--node-name",
            "node-3",
            "--proxy-mode",
            "ipvs",
            "--ipvs-scheduler",
            "sh",
            "--kubelet-port",
            "11250",
            "--seed",
            "7",
            "--dns-upstream",
            "10.0.0.2:53",
            "--pod-mtu-bytes",
            "1400",
        ],
    )
    assert cfg == AgentConfig(
        apiserver="10.0.0.1:6444",
        node_name="node-3",
        proxy_mode="ipvs",
        ipvs_scheduler="sh",
        kubelet_listen_port=11250,
        seed=7,
        dns_upstream="10.0.0.2:53",
        pod_mtu_bytes=1400,
    )
    with pytest.raises(SystemExit):
        _build(AgentConfig, ["--proxy-mode", "nftables"])


def test_config_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "kt-dns.yaml"
    path.write_text("zone: example.test\nttl_s: 30\nupstream: 127.0.0.1:53\n")
    cfg = _build(DnsConfig, ["--config", str(path), "--ttl-s", "9"])
    assert cfg == DnsConfig(zone="example.test", ttl_s=9, upstream="127.0.0.1:53")
    path.write_text("zone: x\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        _build(DnsConfig, ["--config", str(path)])


def test_config_errors_exit_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dns", "--listen", "nonsense"]) == 2
    assert "listen: 'nonsense' is not HOST:PORT" in capsys.readouterr().err
    assert main(["apiserver", "--node-grace-s", "0.5", "--lease-renew-s", "1"]) == 2
    assert "lease_renew_s < node_grace_s" in capsys.readouterr().err
    assert main(["agent", "--ttl-s", "3"]) == 2  # a DNS flag is not an agent flag


def test_agent_registries_flag(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _build(AgentConfig, ["--registries", "127.0.0.1:5000, registry.example"])
    assert cfg.registry_hosts == ("127.0.0.1:5000", "registry.example")
    assert AgentConfig().registry_hosts == ()  # by default a node pulls from nowhere
    assert main(["agent", "--registries", "http://x:1/"]) == 2
    assert "registries: 'http://x:1/' is not HOST[:PORT]" in capsys.readouterr().err
