"""kubeconfig merge/removal (pure) and the file round trip, as kind leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from knemu.cli import main as knemu_main
from knemu.cli.commands import kubeconfig
from knemu.errors import ConfigError
from knemu.pki import Credentials, ensure_pki


def creds(server: str) -> Credentials:
    return Credentials(server, b"CA", b"CERT", b"KEY")


OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
    "users": [{"name": "prod", "user": {"token": "secret"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
    "current-context": "prod",
}


def test_merge_adds_entries_and_switches_context_keeping_others() -> None:
    out = kubeconfig.merged(OTHER, "demo", creds("http://192.168.59.1:6443"))
    assert out["current-context"] == "knemu-demo"
    assert [c["name"] for c in out["clusters"]] == ["prod", "knemu-demo"]
    assert out["clusters"][1]["cluster"]["server"] == "http://192.168.59.1:6443"
    assert out["clusters"][1]["cluster"]["certificate-authority-data"] == "Q0E="  # b"CA"
    assert out["users"][1]["user"]["client-certificate-data"] == "Q0VSVA=="
    assert out["contexts"][1]["context"] == {"cluster": "knemu-demo", "user": "knemu-demo"}
    assert out["users"][0] == OTHER["users"][0]


def test_merge_twice_replaces_rather_than_duplicates() -> None:
    once = kubeconfig.merged({}, "demo", creds("http://a:6443"))
    twice = kubeconfig.merged(once, "demo", creds("http://b:6443"))
    assert [c["cluster"]["server"] for c in twice["clusters"]] == ["http://b:6443"]


def test_without_removes_only_ours_and_unsets_our_current_context() -> None:
    out = kubeconfig.without(kubeconfig.merged(OTHER, "demo", creds("http://a:6443")), "demo")
    assert out == {**OTHER, "current-context": ""}
    assert kubeconfig.without(OTHER, "demo") == OTHER


def test_file_round_trip_is_private_and_leaves_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(OTHER))
    kubeconfig.merge_into(path, "demo", creds("http://a:6443"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(path.read_text())["current-context"] == "knemu-demo"
    assert kubeconfig.remove_from(path, "demo")
    assert not kubeconfig.remove_from(path, "demo")
    assert yaml.safe_load(path.read_text())["clusters"] == OTHER["clusters"]


def test_a_broken_kubeconfig_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="is not a YAML mapping"):
        kubeconfig.merge_into(path, "demo", creds("http://a:6443"))


def test_default_path_follows_kubeconfig_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/tmp/a.yaml:/tmp/b.yaml")
    assert kubeconfig.default_path() == Path("/tmp/a.yaml")


def test_knemu_kubeconfig_prints_the_admin_credentials_of_a_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    server_pki = ensure_pki(data, ["10.0.0.2"])
    (data / "admin.conf").write_text(yaml.safe_dump(Credentials(
        "https://127.0.0.1:6443", server_pki.ca.cert_pem, server_pki.admin.cert_pem,
        server_pki.admin.key_pem, server_pki.admin_token).kubeconfig("x")))  # fmt: skip
    argv = ["kubeconfig", "--name", "c1", "--server", "https://10.0.0.2:6443", "--data-dir"]
    assert knemu_main([*argv, str(data)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["current-context"] == "knemu-c1"
    assert printed["clusters"][0]["cluster"]["server"] == "https://10.0.0.2:6443"
    got = kubeconfig.admin_credentials(data, "https://10.0.0.2:6443")
    assert printed == kubeconfig.config_for("c1", got) and got.cert_pem == server_pki.admin.cert_pem
    assert knemu_main(["kubeconfig", "--server", "http://h:1", "--data-dir", str(data)]) == 2
    assert knemu_main(["kubeconfig", "--server", "https://h:1", "--data-dir", str(tmp_path)]) == 2
    assert "start the api-server with this --data-dir" in capsys.readouterr().err
