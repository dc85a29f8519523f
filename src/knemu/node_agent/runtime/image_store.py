"""A node's image store: an OCI image layout written by skopeo, unpacked by umoci.

Layout under the store's root (``<agent state_dir>/images``)::

    oci/                  one OCI image layout (image-spec image-layout.md) holding every image,
                          tagged with its normalized reference; blobs shared between images
    unpacked/<hex>/       ``umoci unpack`` of a manifest (rootfs/ + umoci metadata), made once
                          per manifest digest and copied for each container run
    .lock                 writers (skopeo copy, umoci unpack) hold it with flock(1)

``import_archive`` takes a ``docker save`` archive (``docker-archive:``) or an OCI archive
(``oci-archive:``); ``knemu image load`` runs it for local nodes and, through ``docker exec``,
inside compose node containers.  The agent only reads ``oci/`` and fills ``unpacked/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from knemu.errors import LocalError, PodRuntimeError
from knemu.node_agent.runtime.images import (
    BadImage,
    ImageConfig,
    archive_refs,
    blob_path,
    config_digest,
    index_refs,
    normalize_ref,
)

log = logging.getLogger(__name__)
PULL_TIMEOUT_S = 300.0  # one image from a registry

MAX_ARCHIVE_BYTES = 8 * 1024**3  # a sanity bound on one archive (larger: split the load)
COPY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class StoredImage:
    ref: str  # normalized reference
    digest: str  # manifest digest
    size_bytes: int = 0


async def run_tool(*argv: str, what: str, timeout_s: float = COPY_TIMEOUT_S) -> str:
    """Run skopeo/umoci/cp; PodRuntimeError naming the command and its stderr on failure."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except FileNotFoundError:
        raise PodRuntimeError(
            f"{what}: {argv[0]} is not installed; install the Debian packages runc, skopeo "
            "and umoci on the node"
        ) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PodRuntimeError(f"{what}: `{' '.join(argv)}` took over {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise PodRuntimeError(
            f"{what}: `{' '.join(argv)}` exited {proc.returncode}: "
            f"{err.decode(errors='replace').strip()}"
        )
    return out.decode(errors="replace")


def read_archive_refs(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(skopeo transport, image names) of a ``docker save`` or OCI archive file."""
    try:
        size = path.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise LocalError(
                f"{path} is {size} bytes, over the {MAX_ARCHIVE_BYTES} byte bound of one "
                "image archive; load its images one at a time"
            )
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            manifest = _member(tar, "manifest.json") if "manifest.json" in names else None
            index = _member(tar, "index.json") if "index.json" in names else None
    except (OSError, tarfile.TarError) as exc:
        raise LocalError(f"cannot read image archive {path}: {exc}") from None
    if manifest is None and index is None:
        raise LocalError(
            f"{path} is neither a `docker save` archive (manifest.json) nor an OCI archive "
            "(index.json); make one with `docker save IMAGE -o FILE.tar`"
        )
    transport = "docker-archive" if manifest is not None else "oci-archive"
    return transport, archive_refs(manifest, index if manifest is None else None)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise LocalError(f"{name} in the archive is not a regular file")
    return f.read(16 * 1024 * 1024)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = root / "oci"
        self.unpacked_dir = root / "unpacked"
        self._unpacking: dict[str, asyncio.Lock] = {}

    def _locked(self, *argv: str) -> list[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        return ["flock", str(self.root / ".lock"), *argv]

    # ---- reading ---------------------------------------------------------------------------

    def images(self) -> list[StoredImage]:
        try:
            index = (self.layout / "index.json").read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LocalError(f"cannot read the image store {self.layout}: {exc}") from None
        out = []
        for ref, digest in sorted(index_refs(index).items()):
            out.append(StoredImage(ref, digest, self._size(digest)))
        return out

    def _size(self, manifest_digest: str) -> int:
        try:
            doc = json.loads((self.layout / blob_path(manifest_digest)).read_bytes())
            return int(doc["config"]["size"]) + sum(int(x["size"]) for x in doc["layers"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def lookup(self, image: str) -> StoredImage | None:
        """The stored image an image name refers to, or None (never raises on a torn index)."""
        try:
            ref = normalize_ref(image)
            found = {i.ref: i for i in self.images()}
        except BadImage as exc:
            log.info("image %s: %s", image, exc.message)
            return None
        except LocalError as exc:
            log.warning("image store: %s", exc.message)
            return None
        return found.get(ref)

    def config(self, image: StoredImage) -> ImageConfig:
        what = f"image {image.ref}"
        try:
            manifest = (self.layout / blob_path(image.digest)).read_bytes()
            blob = (self.layout / blob_path(config_digest(manifest, what))).read_bytes()
        except OSError as exc:
            raise BadImage(f"{what}: missing blob ({exc}); load the image again") from None
        return ImageConfig.from_json(blob, what)

    # ---- writing ---------------------------------------------------------------------------

    async def import_archive(self, path: Path) -> list[str]:
        """Copy every named image of an archive into the store; the names imported."""
        transport, refs = read_archive_refs(path)
        if not refs:
            raise LocalError(
                f"{path} holds no named image; tag it (`docker tag ID NAME:TAG`) and save again"
            )
        for name, ref in refs:
            await run_tool(
                *self._locked("skopeo", "copy", "--quiet", f"{transport}:{path}:{name}",
                              f"oci:{self.layout}:{ref}"),
                what=f"import {ref}",
            )  # fmt: skip
        return [ref for _, ref in refs]

    async def pull(self, image: str, plain_http: bool) -> str:
        """Copy ``image`` from its registry into the store (``skopeo copy docker://``); the
        reference stored.  PodRuntimeError carries skopeo's message."""
        ref = normalize_ref(image)
        tls = ["--src-tls-verify=false"] if plain_http else []
        await run_tool(
            *self._locked("skopeo", "copy", "--quiet", *tls, f"docker://{ref}",
                          f"oci:{self.layout}:{ref}"),
            what=f"pull {ref}", timeout_s=PULL_TIMEOUT_S,
        )  # fmt: skip
        return ref

    async def rootfs(self, image: StoredImage) -> Path:
        """The unpacked root filesystem of ``image`` (umoci unpack once per digest)."""
        hexa = image.digest.split(":", 1)[1]
        target = self.unpacked_dir / hexa
        lock = self._unpacking.setdefault(hexa, asyncio.Lock())
        async with lock:
            if (target / "rootfs").is_dir():
                return target / "rootfs"
            self.unpacked_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.unpacked_dir / f".{hexa}.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                await run_tool(
                    *self._locked("umoci", "unpack", "--image", f"{self.layout}:{image.ref}",
                                  str(tmp)),
                    what=f"unpack {image.ref}",
                )  # fmt: skip
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target / "rootfs"

    def clear_unpacked(self) -> None:
        """Remove the unpacked copies (the layout stays); for node shutdown and tests."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.unpacked_dir)
