"""Image references and image metadata, as pure functions over names and JSON bytes.

* ``normalize_ref("busybox")`` -> ``docker.io/library/busybox:latest``: the Docker reference
  grammar (distribution/reference ``ParseNormalizedNamed``): a first component with a ``.`` or
  ``:`` or equal to ``localhost`` is a registry, else ``docker.io``; a single-component name on
  docker.io gets ``library/``; no tag and no digest means ``:latest``.
* ``ImageConfig.from_json``: the OCI image configuration (image-spec ``config.md``): the
  ``config`` object's Entrypoint, Cmd, Env, WorkingDir, User.
* ``archive_refs``: the image names in a ``docker save`` archive's ``manifest.json`` or an OCI
  layout's ``index.json`` (annotation ``org.opencontainers.image.ref.name``).
* ``manifest_for``/``config_digest``: walk an OCI layout from ``index.json`` to a manifest and its
  config blob (image-spec ``image-layout.md``, ``manifest.md``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from knemu.errors import LocalError

DEFAULT_REGISTRY = "docker.io"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$")


class BadImage(LocalError):
    """An image name or image metadata that cannot be used."""


def normalize_ref(image: str) -> str:
    """The fully qualified reference (``registry/path:tag`` or ``registry/path@digest``)."""
    text = image.strip()
    if not text:
        raise BadImage("the image name is empty; give one such as busybox:1.36")
    name, digest = text, ""
    if "@" in name:
        name, digest = name.split("@", 1)
        if not _DIGEST.match(digest):
            raise BadImage(f"image {image!r}: digest {digest!r} is not sha256:<64 hex digits>")
    tag = ""
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise BadImage(f"image {image!r}: tag {tag!r} is not a valid tag")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
        if not _HOST.match(registry):
            raise BadImage(f"image {image!r}: registry {registry!r} is not a host[:port]")
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _COMPONENT.match(component):
            raise BadImage(
                f"image {image!r}: {component!r} must be lower-case letters, digits and "
                "separators (. _ __ -)"
            )
    ref = f"{registry}/{'/'.join(path)}"
    if digest:
        return f"{ref}@{digest}"
    return f"{ref}:{tag or 'latest'}"


def short_ref(ref: str) -> str:
    """How ``docker images`` shows a normalized reference (``docker.io/library/`` dropped)."""
    for prefix in (f"{DEFAULT_REGISTRY}/library/", f"{DEFAULT_REGISTRY}/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


@dataclass(frozen=True)
class ImageConfig:
    """What an image says about how to run it (image-spec config.md ``config``)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "NAME=value"
    working_dir: str = ""
    user: str = ""  # "uid", "uid:gid", "name" or "name:group"
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"

    @classmethod
    def from_json(cls, data: bytes, what: str = "image") -> ImageConfig:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise BadImage(f"{what}: the image configuration is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise BadImage(f"{what}: the image configuration is not a JSON object")
        cfg = doc.get("config") or {}
        if not isinstance(cfg, dict):
            raise BadImage(f"{what}: the image configuration's 'config' is not an object")
        return cls(
            entrypoint=_strings(cfg.get("Entrypoint"), what, "Entrypoint"),
            cmd=_strings(cfg.get("Cmd"), what, "Cmd"),
            env=_strings(cfg.get("Env"), what, "Env"),
            working_dir=_string(cfg.get("WorkingDir"), what, "WorkingDir"),
            user=_string(cfg.get("User"), what, "User"),
            exposed_ports=tuple(sorted((cfg.get("ExposedPorts") or {}).keys()))
            if isinstance(cfg.get("ExposedPorts"), dict)
            else (),
        )


def _strings(value: object, what: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadImage(f"{what}: config.{field} must be a list of strings")
    return tuple(value)


def _string(value: object, what: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadImage(f"{what}: config.{field} must be a string")
    return value


def _load(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise BadImage(f"{what} is not JSON ({exc})") from None


def archive_refs(manifest_json: bytes | None, index_json: bytes | None) -> list[tuple[str, str]]:
    """(name in the archive, normalized reference) of each named image in an archive: a
    ``docker save`` one (manifest.json RepoTags) or an OCI one (index.json ref.name
    annotations, which must be full image names, as ``skopeo copy ... oci-archive:F:NAME``
    writes them).  Unnamed images are left out."""
    refs: list[tuple[str, str]] = []
    if manifest_json is not None:
        doc = _load(manifest_json, "manifest.json")
        if not isinstance(doc, list):
            raise BadImage("manifest.json of a docker archive must be a list")
        for entry in doc:
            tags = entry.get("RepoTags") if isinstance(entry, dict) else None
            refs += [(t, normalize_ref(t)) for t in tags or [] if isinstance(t, str)]
    elif index_json is not None:
        for entry in _manifests(index_json):
            name = _ref_name(entry)
            if name:
                refs.append((name, normalize_ref(name)))
    return refs


def _manifests(index_json: bytes) -> list[dict[str, object]]:
    doc = _load(index_json, "index.json")
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise BadImage("index.json of an OCI layout must have a 'manifests' list")
    return [e for e in entries if isinstance(e, dict)]


def _ref_name(entry: dict[str, object]) -> str:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else ""


def index_refs(index_json: bytes) -> dict[str, str]:
    """ref.name -> manifest digest in a store's OCI layout index."""
    out: dict[str, str] = {}
    for entry in _manifests(index_json):
        name, digest = _ref_name(entry), entry.get("digest")
        if name and isinstance(digest, str) and _DIGEST.match(digest):
            out[name] = digest
    return out


def config_digest(manifest_json: bytes, what: str) -> str:
    """The config blob digest of an image manifest (image-spec manifest.md)."""
    doc = _load(manifest_json, f"{what}: manifest")
    config = doc.get("config") if isinstance(doc, dict) else None
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BadImage(f"{what}: the manifest has no sha256 config digest")
    return digest


def layer_count(manifest_json: bytes) -> int:
    doc = _load(manifest_json, "manifest")
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return len(layers) if isinstance(layers, list) else 0


def blob_path(digest: str) -> str:
    """``sha256:<hex>`` -> ``blobs/sha256/<hex>`` inside an OCI layout."""
    if not _DIGEST.match(digest):
        raise BadImage(f"digest {digest!r} is not sha256:<64 hex digits>")
    algo, hexa = digest.split(":", 1)
    return f"blobs/{algo}/{hexa}"
