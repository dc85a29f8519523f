"""``knemu image``: put container images on the nodes, as ``kind load`` does.

    knemu image load IMAGE...          from the local Docker engine (docker SDK ``save``)
    knemu image load -i FILE.tar ...   ``docker save`` or OCI archives
    knemu image ls                     what each node's store holds
    knemu image import --store DIR FILE.tar   (run on a node; what ``load`` runs there)

Every node keeps its own store (``<agent state_dir>/images``, see
``knemu.node_agent.runtime.image_store``); ``load`` copies to every node or to ``--nodes``:

* a local cluster (``knemu up``): the nodes' state directories are on this machine, so the
  archive is imported straight into each ``<state>/cluster-NAME/node-N/images``;
* a compose cluster: the archive is copied into the node container with the Docker API
  (``docker cp``: ``put_archive``) and imported there by ``docker exec knemu image import``.
  Not over the kubelet API on purpose: that port is reachable from every pod and node, and an
  upload endpoint for multi-gigabyte bodies there would be one more thing to authorize and
  bound; whoever can ``docker cp`` already owns the node.  Archives over
  ``image_store.MAX_ARCHIVE_BYTES`` (8 GiB) are refused before copying.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from knemu.cli.client import resolve_kind
from knemu.cli.commands.chaos import DockerRuntime
from knemu.errors import LocalError, RemoteError
from knemu.node_agent.runtime.image_store import MAX_ARCHIVE_BYTES, ImageStore, StoredImage
from knemu.node_agent.runtime.images import short_ref

COMPOSE_STORE = "/run/knemu/images"  # the agent's default state_dir + /images
COPY_DIR = "/tmp"


class NodeStores(Protocol):
    def nodes(self) -> list[str]: ...
    def load(self, node: str, archive: Path) -> list[str]: ...
    def images(self, node: str) -> list[StoredImage]: ...


class LocalStores:
    """The nodes of a ``knemu up`` cluster: their stores are directories here."""

    def __init__(self, cluster: str, state_root: str) -> None:
        self.state_dir = Path(state_root) / f"cluster-{cluster}"
        try:
            state = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            raise LocalError(
                f"no local cluster {cluster!r} under {state_root}; start one with knemu up"
            ) from None
        self._nodes = sorted((n for n in state.get("pids", {}) if n.startswith("node-")),
                             key=lambda n: int(n.split("-")[1]))  # fmt: skip

    def nodes(self) -> list[str]:
        return self._nodes

    def _store(self, node: str) -> ImageStore:
        return ImageStore(self.state_dir / node / "images")

    def load(self, node: str, archive: Path) -> list[str]:
        return asyncio.run(self._store(node).import_archive(archive))

    def images(self, node: str) -> list[StoredImage]:
        return self._store(node).images()


class DockerStores:
    """The nodes of a compose cluster: one container each, reached with the Docker API."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.runtime = runtime

    def nodes(self) -> list[str]:
        items = self.runtime.api.list(resolve_kind("nodes"), None).get("items", [])
        return sorted(str(n["metadata"]["name"]) for n in items)

    def _exec(self, node: str, argv: list[str]) -> str:
        container = self.runtime._container(node)
        code, out = container.exec_run(argv)
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        if code != 0:
            raise RemoteError(f"{node}: `{' '.join(argv)}` exited {code}: {text.strip()}")
        return text

    def load(self, node: str, archive: Path) -> list[str]:
        name = f"knemu-image-{os.getpid()}-{archive.name}"
        with _tar_of(archive, name) as wrapped:
            if not self.runtime._container(node).put_archive(COPY_DIR, wrapped):
                raise RemoteError(f"{node}: docker could not copy {archive} into the node")
        try:
            out = self._exec(node, ["knemu", "image", "import", "--store", COMPOSE_STORE,
                                    f"{COPY_DIR}/{name}"])  # fmt: skip
        finally:
            self._exec(node, ["rm", "-f", f"{COPY_DIR}/{name}"])
        return out.split()

    def images(self, node: str) -> list[StoredImage]:
        out = self._exec(node, ["knemu", "image", "ls", "--store", COMPOSE_STORE, "-o", "json"])
        return [StoredImage(i["ref"], i["digest"], int(i["size"])) for i in json.loads(out)]


@contextmanager
def _tar_of(path: Path, name: str) -> Iterator[io.BufferedReader]:
    """``path`` wrapped in a one-member tar stream (what ``put_archive`` takes)."""
    with tempfile.TemporaryFile() as tmp:
        with tarfile.open(fileobj=tmp, mode="w") as tar:
            tar.add(path, arcname=name)
        tmp.seek(0)
        yield tmp  # type: ignore[misc]


def _stores(args: argparse.Namespace) -> NodeStores:
    kind = args.runtime
    local_state = Path(args.state_dir) / f"cluster-{args.cluster}" / "state.json"
    if kind == "local" or (kind == "auto" and local_state.exists()):
        return LocalStores(args.cluster, args.state_dir)
    return DockerStores(DockerRuntime(args.client, args.project))


def _targets(stores: NodeStores, wanted: str) -> list[str]:
    nodes = stores.nodes()
    if not wanted:
        return nodes
    chosen = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(nodes))
    if unknown:
        raise LocalError(f"no node {', '.join(unknown)} in this cluster; it has {', '.join(nodes)}")
    return chosen


def save_from_docker(images: list[str], directory: Path) -> list[Path]:
    """``docker save`` each image into ``directory`` (the docker SDK, as kind does)."""
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a dependency of the chaos extra
        raise LocalError(
            "knemu image load IMAGE needs the docker SDK: pip install 'knemu[chaos]'"
        ) from None
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as exc:
        raise RemoteError(f"cannot reach the docker engine ({exc}); is docker running?") from None
    out = []
    for n, name in enumerate(images):
        try:
            image = engine.images.get(name)
        except docker.errors.ImageNotFound:
            raise LocalError(
                f"image {name!r} is not in the local Docker engine; build or pull it first, "
                "or give an archive with -i FILE.tar"
            ) from None
        path = directory / f"image-{n}.tar"
        size = 0
        with open(path, "wb") as f:
            for chunk in image.save(named=name):
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise LocalError(f"image {name} is over {MAX_ARCHIVE_BYTES} bytes")
                f.write(chunk)
        out.append(path)
    return out


def run_load(args: argparse.Namespace) -> int:
    if not args.images and not args.input:
        raise LocalError("name images to load (from docker) or give archives with -i FILE.tar")
    stores = _stores(args)
    nodes = _targets(stores, args.nodes)
    with tempfile.TemporaryDirectory(prefix="knemu-image-") as tmp:
        archives = [Path(p) for p in args.input or []]
        archives += save_from_docker(list(args.images), Path(tmp)) if args.images else []
        for archive in archives:
            for node in nodes:
                refs = stores.load(node, archive)
                print(f"{node}: loaded {', '.join(short_ref(r) for r in refs)}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    if args.store:
        found = {"": ImageStore(Path(args.store)).images()}
    else:
        stores = _stores(args)
        found = {node: stores.images(node) for node in _targets(stores, args.nodes)}
    if args.output == "json":
        rows = [{"node": n, "ref": i.ref, "digest": i.digest, "size": i.size_bytes}
                for n, images in found.items() for i in images]  # fmt: skip
        print(json.dumps([{k: v for k, v in r.items() if k != "node" or v} for r in rows]))
        return 0
    print(f"{'NODE':<10} {'IMAGE':<40} {'DIGEST':<19} SIZE")
    for node, images in found.items():
        for i in images:
            size = f"{i.size_bytes / 1e6:.1f}MB"
            print(f"{node or '-':<10} {short_ref(i.ref):<40} {i.digest[:19]:<19} {size}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    refs = asyncio.run(ImageStore(Path(args.store)).import_archive(Path(args.archive)))
    print(" ".join(refs))
    return 0


HANDLERS: dict[str, Any] = {"load": run_load, "ls": run_ls, "import": run_import}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        choices=("auto", "docker", "local"),
        default="auto",
        help="what runs the cluster (auto: a local `knemu up` state, else docker)",
    )
    parser.add_argument("--cluster", default="knemu", help="local cluster name (knemu up --name)")
    parser.add_argument("--project", default="", help="docker compose project")
    parser.add_argument("--state-dir", default="/run/knemu", help="local clusters' state root")
    parser.add_argument("--nodes", default="", help="comma-separated nodes (default: all)")
    sub = parser.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    load = sub.add_parser("load", help="copy images to the nodes")
    load.add_argument("images", nargs="*", metavar="IMAGE", help="images in the local Docker")
    load.add_argument(
        "-i",
        "--input",
        action="append",
        metavar="FILE.tar",
        help="a docker save or OCI archive (repeatable)",
    )
    ls = sub.add_parser("ls", help="list the images on the nodes")
    ls.add_argument("--store", default="", help="list this store directory instead")
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    imp = sub.add_parser("import", help="import an archive into a store (on a node)")
    imp.add_argument("--store", required=True, help="the store directory")
    imp.add_argument("archive")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    handler = HANDLERS[args.image_command]
    return int(handler(args))
