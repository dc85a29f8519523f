"""``knemu attach``: join a running container's main process, as ``kubectl attach`` does.

The session is a websocket to ``/api/v1/namespaces/{ns}/pods/{pod}/attach`` speaking the
channel protocol of ``knemu exec`` (docs/INTERFACES.md).  Output starts at the moment of
attach (what came before is in ``knemu logs``); with ``-i`` our stdin goes to the container's,
which needs ``stdin: true`` in its spec.  The command ends when the container exits, with its
exit code (or when our stdin's end lets a stdinOnce container finish).  ``knemu run -i``
attaches through ``attach_stream`` with ``from_start``, so it misses none of a quick command's
output.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys

from knemu.cli.client import ApiClient, Obj
from knemu.cli.commands.exec import exec_stream
from knemu.cli.commands.logs import PODS, pick_container
from knemu.errors import LocalError

__all__ = ["attach_add_arguments", "attach_run", "attach_stream", "check_attachable"]


def attach_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="pod name (or pod/NAME)")
    parser.add_argument("-c", "--container", default=None)
    parser.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the container")
    parser.add_argument("-t", "--tty", action="store_true", help="accepted; knemu has no TTYs")


def check_attachable(pod: Obj, container: str, stdin: bool) -> None:
    """kubectl's checks before it attaches: a pod that can still run, on a node, and a
    container that holds stdin open when ours is to be passed on."""
    name = pod["metadata"]["name"]
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise LocalError(f"cannot attach a container in a completed pod; current phase is {phase}")
    if not (pod.get("spec") or {}).get("nodeName"):
        raise LocalError(
            f'pod "{name}" is not scheduled to a node yet (phase {phase}); wait until it is '
            f"Running: knemu describe pod {name}"
        )
    specs: list[Obj] = (pod.get("spec") or {}).get("containers") or []
    spec: Obj = next((c for c in specs if c.get("name") == container), {})
    if stdin and spec.get("stdin") is not True:
        raise LocalError(
            f'cannot attach stdin to container "{container}" of pod "{name}": it was not created '
            "with stdin: true, so its stdin is /dev/null; drop -i to watch its output, or "
            "create the pod with stdin: true (knemu run -i does)"
        )


def attach_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    name = args.pod.removeprefix("pod/").removeprefix("pods/")
    namespace = args.namespace or "default"
    pod = client.get(PODS, namespace, name)
    container = pick_container(pod, args.container)
    check_attachable(pod, container, args.stdin)
    return attach_stream(client, namespace, name, container, args.stdin)


def attach_stream(
    client: ApiClient,
    namespace: str,
    name: str,
    container: str,
    stdin: bool,
    from_start: bool = False,
) -> int:
    """One attach session: our stdin (if asked) to the container, its output to ours; the
    container's exit code.  ``from_start``: output from the start of its current run
    (knemu's ``fromStart``), not from now.  Raises ``StreamRefused`` if it cannot attach."""
    query = [
        ("container", container),
        ("stdin", "true" if stdin else "false"),
        ("stdout", "true"),
        ("stderr", "true"),
    ]
    if from_start:
        query.append(("fromStart", "true"))
    url = f"{client.server}/api/v1/namespaces/{namespace}/pods/{name}/attach"
    # A closed descriptor 0 leaves sys.stdin None: that is an empty stdin, so the command
    # sees EOF rather than waiting for input that cannot come.
    source = (sys.stdin or io.StringIO()) if stdin else None
    return asyncio.run(exec_stream(client, url, query, source, what="attach"))
