"""The REST port's TLS and credentials: which names the serving certificate covers, the
static tokens, and the admin kubeconfig the api-server leaves in its data directory
(kubeadm's ``/etc/kubernetes/admin.conf``) for ``knemu up`` and the compose setup to hand out.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import socket
from pathlib import Path

import yaml

from knemu import pki
from knemu.apiserver.auth.authn import Authenticator, UserInfo
from knemu.apiserver.auth.sa_tokens import TokenIssuer
from knemu.config import ApiServerConfig
from knemu.errors import ConfigError

TOKEN_FILE = "tokens.csv"  # kube-apiserver --token-auth-file: token,user,uid,"group1,group2"


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def client_host(listen_host: str) -> str:
    """The address a local client uses for a listen address (loopback for "all")."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen_host, listen_host)


def serving_hosts(config: ApiServerConfig, listen_host: str) -> list[str]:
    """Every name a client may use for this api-server: the listen address (or, listening on
    all addresses, this machine's names and addresses), the ``kubernetes`` Service's names
    and ClusterIP (as kube-apiserver's certificate has them) and ``cert_sans``."""
    service_ip = str(ipaddress.ip_network(config.service_cidr).network_address + 1)
    domain = config.cluster_domain
    hosts = ["localhost", "127.0.0.1", "::1", "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", f"kubernetes.default.svc.{domain}", service_ip]  # fmt: skip
    if listen_host not in ("", "0.0.0.0", "::"):
        hosts.insert(0, listen_host)
    else:
        hostname = socket.gethostname()
        hosts.append(hostname)
        try:
            infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
            hosts += [str(info[4][0]) for info in infos]
        except OSError:
            pass  # no resolvable hostname: the names above and cert_sans remain
    return list(dict.fromkeys([*hosts, *config.cert_sans]))


def server_pki(config: ApiServerConfig, listen_host: str) -> pki.ServerPki:
    return pki.ensure_pki(config.data_dir, serving_hosts(config, listen_host))


def _token_users(path: Path) -> dict[str, UserInfo]:
    users: dict[str, UserInfo] = {}
    try:
        with open(path, newline="") as rows:
            for n, row in enumerate(csv.reader(rows), 1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 3:
                    raise ConfigError(f'{path} line {n}: want token,user,uid[,"group1,group2"]')
                groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                users[row[0]] = UserInfo(row[1], groups, row[2])
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return users


def authenticator(server_pki: pki.ServerPki) -> Authenticator:
    """Client certificates from the cluster CA; the admin token; ``pki/tokens.csv``."""
    tokens = _token_users(server_pki.directory / TOKEN_FILE)
    tokens[server_pki.admin_token] = UserInfo(pki.ADMIN_USER, (pki.MASTERS_GROUP,))
    return Authenticator(tokens)


def write_admin_kubeconfig(
    server_pki: pki.ServerPki, data_dir: str, server: str
) -> pki.Credentials:
    """``<data_dir>/admin.conf`` (mode 0600) for ``server``; returns its credentials."""
    creds = pki.admin_credentials(server_pki, server)
    path = Path(data_dir) / pki.ADMIN_KUBECONFIG
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(creds.kubeconfig("knemu-admin"), out, sort_keys=False)
    tmp.replace(path)
    return creds


SA_KEY = "sa.key"  # kube-apiserver's --service-account-signing-key-file (kubeadm's name)


def service_account_issuer(server_pki: pki.ServerPki) -> TokenIssuer:
    """The ServiceAccount token signer with ``pki/sa.key`` (made on first start, kept after:
    tokens stay valid across restarts)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = server_pki.directory / SA_KEY
    try:
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())  # fmt: skip
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        private = path.read_bytes()
        loaded = serialization.load_pem_private_key(private, None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC P-256 key")
        public = loaded.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"service account signing key {path}: {exc}; fix or remove it") from None
    return TokenIssuer(private, public)
