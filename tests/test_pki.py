"""The cluster PKI: a CA, certificates that TLS accepts, kubeadm's CA pin, kubeconfigs."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from pathlib import Path

import pytest
import yaml

from knemu import pki


def test_ensure_pki_creates_once_and_reissues_the_serving_cert_for_a_new_host(
    tmp_path: Path,
) -> None:
    first = pki.ensure_pki(tmp_path, ["127.0.0.1", "localhost"])
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    again = pki.ensure_pki(tmp_path, ["127.0.0.1"])
    assert again.ca == first.ca and again.serving == first.serving
    assert again.admin_token == first.admin_token and len(first.admin_token) >= 32
    moved = pki.ensure_pki(tmp_path, ["10.0.0.7"])
    assert moved.ca == first.ca and moved.serving != first.serving
    assert {"10.0.0.7", "127.0.0.1", "localhost"} <= pki.cert_hosts(moved.serving.cert_pem)


def test_issued_certificates_name_the_user_and_groups_and_chain_to_the_ca() -> None:
    ca = pki.create_ca()
    client = pki.issue(ca, "system:node:node-1", ["system:nodes"])
    assert pki.subject_user(client.cert_pem) == ("system:node:node-1", ("system:nodes",))
    store = ssl.create_default_context(cadata=ca.cert_pem.decode())
    assert store.get_ca_certs()[0]["subject"] == ((("commonName", "kubernetes"),),)


def test_the_ca_pin_is_kubeadms_spki_hash(tmp_path: Path) -> None:
    ca = pki.create_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    # kubeadm's documented recipe: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
                         capture_output=True, check=True).stdout  # fmt: skip
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout  # fmt: skip
    assert pki.ca_cert_hash(ca.cert_pem) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_credentials_round_trip_through_a_kubeconfig(tmp_path: Path) -> None:
    ca = pki.create_ca()
    user = pki.issue(ca, "alice", ["dev"])
    creds = pki.Credentials("https://127.0.0.1:6443", ca.cert_pem, user.cert_pem, user.key_pem,
                            "tok")  # fmt: skip
    config = creds.kubeconfig("knemu-x")
    assert config["current-context"] == "knemu-x"
    assert pki.from_kubeconfig(yaml.safe_load(yaml.safe_dump(config))) == creds
    # file references are read relative to the kubeconfig's directory, as kubectl does
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    by_file = {"current-context": "c", "contexts": [{"name": "c", "context": {
        "cluster": "k", "user": "u"}}], "clusters": [{"name": "k", "cluster": {
        "server": "https://h:1", "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}  # fmt: skip
    got = pki.from_kubeconfig(by_file, tmp_path)
    assert got is not None and got.ca_pem == ca.cert_pem and got.token == "t"
    assert pki.from_kubeconfig(by_file, tmp_path, context="missing") is None
    assert creds.ssl_context() is not None and creds.headers() == {"Authorization": "Bearer tok"}
    assert pki.Credentials("http://x").ssl_context() is None


def test_a_broken_kubeconfig_file_reference_is_a_clear_error(tmp_path: Path) -> None:
    config = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k",
              "user": "u"}}], "clusters": [{"name": "k", "cluster": {"server": "https://h",
              "certificate-authority": "missing.crt"}}], "users": []}  # fmt: skip
    with pytest.raises(Exception, match="kubeconfig context 'c'"):
        pki.from_kubeconfig(config, tmp_path)
