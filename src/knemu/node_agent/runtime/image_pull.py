"""Which image a container runs, per ``imagePullPolicy`` (sans-I/O).

Images reach nodes with ``knemu image load`` (as kind's ``kind load docker-image``), or are
pulled from the registries a node is configured with (``AgentConfig.registries``: none by
default, so that a node never contacts an address nobody named).  Following the kubelet's
image manager (https://kubernetes.io/docs/concepts/containers/images/#image-pull-policy):

* the image's registry is one the node pulls from -> pull it when it is not in the store
  (``IfNotPresent``) or at every container start (``Always``), never with ``Never``;

* image in the node's store -> run it (``Always`` would pull first; with no registry the
  loaded image is what a pull would give, said in the Pulled event);
* not in the store, but one the built-in workloads stand in for (``nginx*``, echo, tools
  images; ``workloads.plan_container``) -> the built-in;
* not in the store, ``Never`` -> ``ErrImageNeverPull``;
* otherwise -> ``ErrImagePull`` then ``ImagePullBackOff`` (retried with the kubelet's image
  back-off, 10 s doubling to 300 s), the message naming ``knemu image load IMAGE``.
"""

from __future__ import annotations

from dataclasses import dataclass

PULL_BACKOFF_INITIAL_S = 10.0
PULL_BACKOFF_MAX_S = 300.0


@dataclass(frozen=True)
class ImageDecision:
    kind: str  # "store" | "builtin" | "missing" | "pull"
    reason: str = ""  # for "missing": ErrImagePull | ErrImageNeverPull
    message: str = ""


def registry_of(ref: str) -> str:
    """The registry host[:port] of a normalized reference."""
    return ref.split("/", 1)[0]


def plain_http(registry: str) -> bool:
    """Registries spoken to without TLS: loopback ones, as Docker treats 127.0.0.0/8."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host == "localhost" or host.startswith("127.") or host in ("[::1]", "::1")


def decide(
    image: str, pull_policy: str, in_store: bool, builtin_error: str, node: str,
    pulled: bool = False, pullable: bool = False,
) -> ImageDecision:  # fmt: skip
    """``builtin_error`` is ``plan_container``'s error ('' when a built-in can stand in);
    ``pullable``: the image's registry is one this node pulls from; ``pulled``: this start
    has already pulled it (``Always`` pulls once per container start)."""
    wanted = pull_policy == "Always" or (pull_policy != "Never" and not in_store)
    if pullable and not pulled and wanted:
        return ImageDecision("pull")
    if in_store:
        return ImageDecision("store")
    if not builtin_error:
        return ImageDecision("builtin")
    load = f"load it with `knemu image load {image}`"
    if pull_policy == "Never":
        return ImageDecision(
            "missing", "ErrImageNeverPull",
            f'Container image "{image}" is not present with pull policy of Never on {node}; '
            f"{load}",
        )  # fmt: skip
    return ImageDecision(
        "missing", "ErrImagePull",
        f'Failed to pull image "{image}": it is not in the image store of {node}, which pulls '
        f"from no registry of it (agent option registries; {builtin_error}); {load}",
    )  # fmt: skip


def pull_backoff_s(failures: int) -> float:
    """Delay before the next look after ``failures`` failed pulls (1 -> 10 s, doubling)."""
    return float(min(PULL_BACKOFF_MAX_S, PULL_BACKOFF_INITIAL_S * 2 ** max(0, failures - 1)))
