"""Names, as Kubernetes checks and makes them.

Validators return a list of human-readable problems (empty when the value is fine), worded
like k8s.io/apimachinery/pkg/util/validation so that a person who knows kubectl's messages
recognises them.  Generators make the names controllers give to the objects they create:

* ``<deployment>-<pod-template-hash>`` for ReplicaSets, the hash being FNV-32a of the pod
  template rendered with ``safe_encode`` (pkg/controller/controller_utils.go ComputeHash and
  apimachinery/pkg/util/rand SafeEncodeString);
* ``<replicaset>-<5 chars>`` for pods, from the alphabet of apimachinery's rand.String.
"""

from __future__ import annotations

import datetime
import json
import random
import re
from typing import Any

# apimachinery/pkg/util/rand: no vowels (no words) and no 0, 1, 3 (look like o, l, e).
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME_CHARS = re.compile(r"[-a-z0-9]+")
_IANA_HAS_LETTER = re.compile(r"[a-z]")


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} characters"


def _length_and_pattern(
    value: str, limit: int, pattern: re.Pattern[str], message: str
) -> list[str]:
    """The two checks every Kubernetes name validator makes: at most ``limit`` characters, and
    the whole value matching ``pattern`` (its message quotes the regex, as Kubernetes does)."""
    errs = []
    if len(value) > limit:
        errs.append(_too_long(limit))
    if not pattern.fullmatch(value):
        errs.append(message)
    return errs


def dns1123_label(value: str) -> list[str]:
    """RFC 1123 label: namespaces, container names, pod hostnames, port names."""
    return _length_and_pattern(
        value,
        DNS1123_LABEL_MAX,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
        "or '-', and must start and end with an alphanumeric character (e.g. 'my-name', "
        "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    )


def dns1123_subdomain(value: str) -> list[str]:
    """RFC 1123 subdomain: the name of most objects (pods, deployments, nodes)."""
    return _length_and_pattern(
        value,
        DNS1123_SUBDOMAIN_MAX,
        _DNS1123_SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
        "characters, '-' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    )


def dns1035_label(value: str) -> list[str]:
    """RFC 1035 label: Service names (they become DNS names and env var prefixes)."""
    return _length_and_pattern(
        value,
        DNS1123_LABEL_MAX,
        _DNS1035_LABEL,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
        "start with an alphabetic character, and end with an alphanumeric character "
        "(e.g. 'my-name', or 'abc-123', regex used for validation is "
        "'[a-z]([-a-z0-9]*[a-z0-9])?')",
    )


def iana_svc_name(value: str) -> list[str]:
    """IANA_SVC_NAME (RFC 6335 section 5.1): named container ports and targetPorts."""
    errs = []
    if len(value) > 15:
        errs.append(_too_long(15))
    if not _IANA_SVC_NAME_CHARS.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not _IANA_HAS_LETTER.search(value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def qualified_name(value: str) -> list[str]:
    """Label and annotation keys: optional DNS subdomain prefix, '/', a name of <= 63."""
    prefix, sep, name = value.rpartition("/")
    errs: list[str] = []
    if sep:
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend(f"prefix part {e}" for e in dns1123_subdomain(prefix))
    if not name:
        return [*errs, "name part must be non-empty"]
    if len(name) > DNS1123_LABEL_MAX:
        errs.append(f"name part {_too_long(DNS1123_LABEL_MAX)}")
    if not _QUALIFIED_NAME.fullmatch(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
            "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return errs


def label_value(value: str) -> list[str]:
    """A label value: empty, or <= 63 characters of the qualified-name alphabet."""
    if value == "":
        return []
    return _length_and_pattern(
        value,
        DNS1123_LABEL_MAX,
        _QUALIFIED_NAME,
        "a valid label must be an empty string or consist of alphanumeric characters, "
        "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
        "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    )


# ---- generated names -----------------------------------------------------------------------


def fnv32a(data: bytes) -> int:
    """FNV-1a, 32 bits (the hash Go's hash/fnv New32a computes)."""
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """apimachinery rand.SafeEncodeString: map each byte into ALPHABET (no bad words)."""
    return "".join(ALPHABET[b % len(ALPHABET)] for b in text.encode())


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def template_hash(template: Any, collision_count: int = 0) -> str:
    """pod-template-hash of a Deployment's template (ComputeHash in controller_utils.go).

    Kubernetes feeds a deep print of the Go struct to FNV-32a; knemu feeds canonical JSON, so
    values differ from a real cluster's but have the same shape and stability.
    """
    data = canonical_json(template)
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def random_suffix(rng: random.Random, length: int = 5) -> str:
    """rand.String(5): the suffix of generated pod names."""
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def rfc3339(now: float) -> str:
    """Seconds since the epoch as Kubernetes writes timestamps (RFC 3339, UTC, seconds)."""
    moment = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
