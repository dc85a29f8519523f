"""The cluster's PKI and credentials: one CA, certificates issued by it, bearer tokens.

Every component uses this module for what kubeadm's ``/etc/kubernetes/pki`` holds: the
api-server creates a cluster CA in its data directory on first start (``ensure_pki``), a
serving certificate whose SANs name every address it is reached by, an admin client
certificate (``CN=kubernetes-admin, O=system:masters``, kubeadm's admin.conf) and an admin
bearer token; clients carry ``Credentials`` (CA + client certificate or token) and build TLS
contexts from them.  Users are named as Kubernetes' X.509 authenticator names them: the
subject's CN is the user, each O a group
(https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates).

Keys are ECDSA P-256 (fast to make on a loaded machine; kubectl and Go accept them).  The CA
pin is kubeadm's ``--discovery-token-ca-cert-hash``: ``sha256:`` + the SHA-256 of the CA's
DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from knemu.errors import ConfigError

CA_DAYS = 3650
CERT_DAYS = 365
ADMIN_USER = "kubernetes-admin"
MASTERS_GROUP = "system:masters"
PKI_DIR = "pki"
ADMIN_KUBECONFIG = "admin.conf"


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def _name(common_name: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(common_name: str = "kubernetes") -> Issued:
    """A self-signed CA certificate (kubeadm names its CA ``kubernetes``)."""
    key = _new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    ca: Issued,
    common_name: str,
    orgs: Iterable[str] = (),
    hosts: Iterable[str] = (),
    server: bool = False,
    days: int = CERT_DAYS,
) -> Issued:
    """A certificate signed by ``ca``: a client certificate for user ``common_name`` in
    groups ``orgs``, or (``server``) a serving certificate for ``hosts``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the cluster CA key is not an ECDSA key; remove the pki directory")
    key = _new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    hosts = list(hosts)
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def cert_hosts(cert_pem: bytes) -> set[str]:
    """The DNS names and IP addresses a certificate's SAN extension names."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return ips | set(san.get_values_for_type(x509.DNSName))


def subject_user(cert_pem: bytes) -> tuple[str, tuple[str, ...]]:
    """(CN, Os) of a certificate: the user and groups it names."""
    subject = x509.load_pem_x509_certificate(cert_pem).subject
    cn = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return (cn[0] if cn else ""), orgs


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's pin: ``sha256:`` + hex SHA-256 of the CA's DER SubjectPublicKeyInfo."""
    spki = (
        x509.load_pem_x509_certificate(ca_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def new_token() -> str:
    """A random bearer token: 192 bits from the OS's CSPRNG, hex."""
    return secrets.token_hex(24)


# ---- the api-server's data directory ---------------------------------------------------------


@dataclass(frozen=True)
class ServerPki:
    """What the api-server keeps under ``<data_dir>/pki``."""

    ca: Issued
    serving: Issued
    admin: Issued
    admin_token: str
    directory: Path

    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS for the REST port: client certificates are asked for and checked against the
        CA, but optional (a bearer token may authenticate instead)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.directory / "apiserver.crt", self.directory / "apiserver.key")
        ctx.load_verify_locations(cadata=self.ca.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _load_or(directory: Path, stem: str, make: Callable[[], Issued]) -> Issued:
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    if crt.exists() and key.exists():
        return Issued(crt.read_bytes(), key.read_bytes())
    issued = make()
    _write_private(key, issued.key_pem)
    crt.write_bytes(issued.cert_pem)
    return issued


def ensure_pki(data_dir: str | Path, hosts: Iterable[str]) -> ServerPki:
    """Load, or create on first start, the CA, admin credentials and a serving certificate
    for ``hosts`` in ``<data_dir>/pki`` (the serving certificate is re-issued when a host is
    missing from its SANs, as ``kubeadm init phase certs`` does after an address change)."""
    directory = Path(data_dir) / PKI_DIR
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = _load_or(directory, "ca", create_ca)
        admin = _load_or(directory, "admin", lambda: issue(ca, ADMIN_USER, [MASTERS_GROUP]))
        wanted = list(hosts)
        serving = _load_or(directory, "apiserver", lambda: _serving(ca, wanted))
        if not set(wanted) <= cert_hosts(serving.cert_pem):
            serving = _serving(ca, wanted + sorted(cert_hosts(serving.cert_pem)))
            _write_private(directory / "apiserver.key", serving.key_pem)
            (directory / "apiserver.crt").write_bytes(serving.cert_pem)
        token_file = directory / "admin.token"
        if not token_file.exists():
            _write_private(token_file, new_token().encode())
        token = token_file.read_text().strip()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cluster PKI in {directory}: {exc}; fix or remove it") from None
    return ServerPki(ca, serving, admin, token, directory)


def _serving(ca: Issued, hosts: list[str]) -> Issued:
    return issue(ca, "kube-apiserver", hosts=hosts, server=True)


# ---- client side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """How a client reaches and proves itself to the api-server: its URL, the CA to trust,
    and a client certificate or a bearer token (or both, as a kubeconfig user may have)."""

    server: str
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""
    token: str = ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context trusting the cluster CA and presenting the client
        certificate; None for a plain http:// server."""
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        if self.cert_pem and self.key_pem:
            _load_chain(ctx, self.cert_pem, self.key_pem)
        return ctx

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def with_server(self, server: str) -> Credentials:
        return Credentials(server, self.ca_pem, self.cert_pem, self.key_pem, self.token)

    def kubeconfig(self, name: str) -> dict[str, Any]:
        """A complete kubeconfig with one cluster, user and context ``name``, current."""
        cluster, user = self.kubeconfig_entries()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        }

    def kubeconfig_entries(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``cluster`` and ``user`` bodies of a kubeconfig carrying these credentials."""
        cluster: dict[str, Any] = {"server": self.server}
        if self.ca_pem:
            cluster["certificate-authority-data"] = _b64(self.ca_pem)
        user: dict[str, Any] = {}
        if self.cert_pem and self.key_pem:
            user["client-certificate-data"] = _b64(self.cert_pem)
            user["client-key-data"] = _b64(self.key_pem)
        if self.token:
            user["token"] = self.token
        return cluster, user


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl can only load a certificate chain from files: write them for the moment it takes.
    with tempfile.TemporaryDirectory(prefix="knemu-cred-") as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(cert_pem)
        _write_private(key, key_pem)
        ctx.load_cert_chain(cert, key)


def admin_credentials(pki: ServerPki, server: str) -> Credentials:
    """The admin's credentials for ``server``: CA + client certificate (kubeadm admin.conf),
    and the admin token (for the web console's login, where a browser has no certificate)."""
    return Credentials(
        server, pki.ca.cert_pem, pki.admin.cert_pem, pki.admin.key_pem, pki.admin_token
    )


def _field(entry: Mapping[str, Any], data_key: str, file_key: str, base: Path) -> bytes:
    if entry.get(data_key):
        return base64.b64decode(str(entry[data_key]))
    if entry.get(file_key):
        path = Path(str(entry[file_key]))
        return (path if path.is_absolute() else base / path).read_bytes()
    return b""


def from_kubeconfig(
    config: Mapping[str, Any], base: Path = Path("."), context: str = ""
) -> Credentials | None:
    """The credentials of ``context`` (default: the current context) of a kubeconfig
    mapping; None when it has no such context.  Files are relative to ``base``."""
    name = context or str(config.get("current-context") or "")

    def named(section: str, key: str) -> Mapping[str, Any]:
        for entry in config.get(section) or []:
            if isinstance(entry, Mapping) and entry.get("name") == key:
                body = entry.get(section[:-1])
                return body if isinstance(body, Mapping) else {}
        return {}

    ctx = named("contexts", name)
    if not ctx:
        return None
    cluster, user = named("clusters", str(ctx.get("cluster"))), named("users", str(ctx.get("user")))
    try:
        return Credentials(
            str(cluster.get("server") or ""),
            _field(cluster, "certificate-authority-data", "certificate-authority", base),
            _field(user, "client-certificate-data", "client-certificate", base),
            _field(user, "client-key-data", "client-key", base),
            str(user.get("token") or ""),
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"kubeconfig context {name!r}: {exc}") from None
