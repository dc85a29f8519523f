"""kubeconfig files for knemu clusters, written and cleaned up the way kind does.

``knemu up`` merges a cluster, a user and a context named ``knemu-<name>`` into the kubeconfig
kubectl reads (``--kubeconfig``, else the first file of ``$KUBECONFIG``, else
``~/.kube/config``) and makes that context current; ``knemu down`` removes the three entries
again and leaves everything else in the file alone.  ``knemu kubeconfig`` prints one for a
local cluster or any server URL (``scripts/compose kubeconfig`` uses it), as
``kind get kubeconfig`` does.  Format: https://kubernetes.io/docs/concepts/configuration/
organize-cluster-access-kubeconfig/.  The entries carry the admin credentials the api-server
wrote into its data directory (``admin.conf``, as kubeadm's): the cluster CA and a client
certificate of ``kubernetes-admin`` in ``system:masters``.

The merge and removal are pure functions of dicts; only ``merge_into`` / ``remove_from`` touch
the file (under an exclusive lock, replaced atomically, mode 0600 like kind's).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from knemu.cli.client import kubeconfig_path
from knemu.config import ApiServerConfig
from knemu.errors import ConfigError, KnemuError
from knemu.pki import ADMIN_KUBECONFIG, Credentials, from_kubeconfig

Config = dict[str, Any]
SECTIONS = ("clusters", "users", "contexts")


def entry_name(cluster: str) -> str:
    """The cluster, user and context name for knemu cluster ``cluster`` (kind: ``kind-NAME``)."""
    return f"knemu-{cluster}"


def config_for(cluster: str, creds: Credentials) -> Config:
    """A complete kubeconfig with one cluster, user and context, that context current."""
    return creds.kubeconfig(entry_name(cluster))


def admin_credentials(data_dir: str | Path, server: str = "") -> Credentials:
    """The admin credentials an api-server left in ``data_dir`` (for ``server``, if given)."""
    path = Path(data_dir) / ADMIN_KUBECONFIG
    try:
        creds = from_kubeconfig(yaml.safe_load(path.read_text()) or {}, path.parent)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"no admin credentials in {path} ({exc}); start the api-server with this "
            "--data-dir first, or pass the one it uses"
        ) from None
    if creds is None:
        raise ConfigError(f"{path} has no current context; restart the api-server to rewrite it")
    return creds.with_server(server) if server else creds


def merged(existing: Config, cluster: str, creds: Credentials) -> Config:
    """``existing`` with knemu cluster ``cluster``'s entries replaced or added, made current."""
    out = copy.deepcopy(existing) if existing else {"apiVersion": "v1", "kind": "Config"}
    ours = config_for(cluster, creds)
    name = entry_name(cluster)
    for section in SECTIONS:
        kept = [e for e in out.get(section) or [] if not _named(e, name)]
        out[section] = kept + ours[section]
    out["current-context"] = name
    return out


def without(existing: Config, cluster: str) -> Config:
    """``existing`` without knemu cluster ``cluster``'s entries (current context unset if it
    was ours, as ``kind delete cluster`` does)."""
    out = copy.deepcopy(existing)
    name = entry_name(cluster)
    for section in SECTIONS:
        if section in out:
            out[section] = [e for e in out[section] or [] if not _named(e, name)]
    if out.get("current-context") == name:
        out["current-context"] = ""
    return out


def _named(entry: Any, name: str) -> bool:
    return isinstance(entry, dict) and entry.get("name") == name


def default_path() -> Path:
    """Where kubectl looks first: the first file of $KUBECONFIG, else ~/.kube/config."""
    return kubeconfig_path()


# ---- the file (I/O) ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read(path: Path) -> Config:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"kubeconfig {path} cannot be read ({exc}); fix or move it, or pass --kubeconfig"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"kubeconfig {path} is not a YAML mapping; fix or move it")
    return data


def _write(path: Path, config: Config) -> None:
    tmp = path.with_name(path.name + ".knemu-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, default_flow_style=False, sort_keys=False)
    tmp.replace(path)


def merge_into(path: Path, cluster: str, creds: Credentials) -> None:
    with _locked(path):
        _write(path, merged(_read(path), cluster, creds))


def remove_from(path: Path, cluster: str) -> bool:
    """Remove the cluster's entries; True when there were any."""
    with _locked(path):
        if not path.exists():
            return False
        config = _read(path)
        stripped = without(config, cluster)
        if stripped == config:
            return False
        _write(path, stripped)
        return True


def usage(path: Path, cluster: str) -> str:
    """What ``knemu up`` prints about the kubeconfig it wrote."""
    flag = "" if path == default_path() else f" --kubeconfig {path}"
    return (
        f"kubeconfig  {path} (context {entry_name(cluster)}, now current)\n"
        f"  kubectl{flag} get nodes"
    )


# ---- `knemu kubeconfig` -------------------------------------------------------------------


def kubeconfig_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="knemu", help="cluster name for the entries")
    parser.add_argument(
        "--data-dir",
        default=ApiServerConfig().data_dir,
        help="the api-server's data directory, holding its admin credentials (default %(default)s)",
    )


def kubeconfig_run(args: argparse.Namespace) -> int:
    """Print an admin kubeconfig for the cluster (as ``kind get kubeconfig``)."""
    try:
        server = args.server
        if not server.startswith("https://"):
            raise ConfigError(f"--server {server!r} is not an https:// URL; pass the URL")
        creds = admin_credentials(args.data_dir, server)
        yaml.safe_dump(config_for(args.name, creds), sys.stdout, sort_keys=False)
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0
