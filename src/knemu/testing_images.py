"""Small container images built offline, for tests and benchmarks (no registry, no Docker).

``write_image_archive(path, ref, layers, config)`` writes a ``docker save`` archive
(``manifest.json``, the image configuration, one tar per layer; the format of moby's
``image/tarexport``) that ``knemu image load -i`` and ``skopeo copy docker-archive:`` read.
``busybox_layer()`` is a root filesystem made of the node's static busybox (Debian's
``busybox-static``): a shell, ``httpd``, ``nc``, ``wget``, ``ps`` ... and an ``/etc/os-release``
of its own, so a test can tell the image's files from the node's.

``build_test_images(dir)`` builds the two images the tests and ``bench/`` use, from the same base
layer: ``knemu.test/web:v1`` (busybox httpd on :8080 answering ``web <hostname>``) and
``knemu.test/crasher:v1`` (prints a line, exits 3 after a second).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = (
    "sh", "ash", "cat", "echo", "env", "hostname", "httpd", "id", "ls", "mkdir", "nc", "ps",
    "sleep", "true", "false", "wget", "nslookup", "mount", "grep", "touch", "test", "ip",
    "kill", "date", "wc", "head", "tail", "readlink", "uname",
)  # fmt: skip
OS_RELEASE = 'NAME="knemu test image"\nID=knemu-test\nVERSION_ID=1\n'
WEB_REF = "knemu.test/web:v1"
CRASHER_REF = "knemu.test/crasher:v1"
_MTIME = 1_700_000_000  # fixed: the same inputs give the same digests


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            return path
    found = shutil.which("busybox")
    if found is None:
        raise FileNotFoundError(
            "no busybox on this machine; install the Debian package busybox-static"
        )
    return Path(found)


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, *, mode: int = 0o644,
         kind: bytes = tarfile.REGTYPE, link: str = "") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.type, info.linkname = mode, _MTIME, kind, link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if data is not None and kind == tarfile.REGTYPE else None)


def layer_tar(
    files: Mapping[str, bytes | str],
    dirs: Sequence[str] = (),
    links: Mapping[str, str] | None = None,
    executable: Sequence[str] = (),
) -> bytes:
    """An uncompressed layer tar: directories, files (str or bytes) and symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            _add(tar, d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            _add(tar, name, raw, mode=0o755 if name in executable else 0o644)
        for name, target in (links or {}).items():
            _add(tar, name, kind=tarfile.SYMTYPE, link=target, mode=0o777)
    return buf.getvalue()


def busybox_layer() -> bytes:
    """The base layer: static busybox, its applets, /etc files of the image's own."""
    return layer_tar(
        files={
            "bin/busybox": find_busybox().read_bytes(),
            "etc/os-release": OS_RELEASE,
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/:/bin/sh\n",
            "etc/group": "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
        },
        dirs=["bin", "etc", "tmp", "root", "home", "home/app", "proc", "sys", "dev", "www"],
        links={f"bin/{a}": "busybox" for a in APPLETS},
        executable=["bin/busybox"],
    )


def write_image_archive(path: Path, ref: str, layers: Sequence[bytes],
                        config: Mapping[str, Any]) -> Path:  # fmt: skip
    """A ``docker save`` archive of one image tagged ``ref``."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "created": "2023-11-14T22:13:20Z",
    }, sort_keys=True).encode()  # fmt: skip
    config_name = f"{hashlib.sha256(image_config).hexdigest()}.json"
    layer_names = [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": layer_names}])
    with tarfile.open(path, "w") as tar:
        _add(tar, config_name, image_config)
        for name, layer in zip(layer_names, layers, strict=True):
            _add(tar, name.split("/")[0], kind=tarfile.DIRTYPE, mode=0o755)
            _add(tar, name, layer)
        _add(tar, "manifest.json", manifest.encode())
    return path


WEB_SCRIPT = """#!/bin/sh
# knemu test web app: GET / answers "web <hostname>" (busybox httpd, in the foreground).
echo "web $(hostname)" > /www/index.html
echo "web listening on ${PORT:-8080}"
exec httpd -f -v -p "${PORT:-8080}" -h /www
"""


def build_test_images(directory: Path) -> dict[str, Path]:
    """Build the web and crasher images (one archive each); ref -> archive path."""
    directory.mkdir(parents=True, exist_ok=True)
    base = busybox_layer()
    web_layer = layer_tar(
        files={"app/web.sh": WEB_SCRIPT},
        dirs=["app"], executable=["app/web.sh"],
    )  # fmt: skip
    web = write_image_archive(directory / "web.tar", WEB_REF, [base, web_layer], {
        "Entrypoint": ["/app/web.sh"], "Env": ["PATH=/bin", "PORT=8080", "APP=web"],
        "WorkingDir": "/app", "ExposedPorts": {"8080/tcp": {}},
    })  # fmt: skip
    crasher = write_image_archive(directory / "crasher.tar", CRASHER_REF, [base], {
        "Cmd": ["/bin/sh", "-c", "echo crasher starting on $(hostname); sleep 1; exit 3"],
        "Env": ["PATH=/bin"], "User": "app",
    })  # fmt: skip
    return {WEB_REF: web, CRASHER_REF: crasher}
