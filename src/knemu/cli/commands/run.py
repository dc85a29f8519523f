"""``knemu run``: create a pod as ``kubectl run`` does and, with ``-i``, attach to it.

The pod is the one kubectl would create for the same flags
(https://kubernetes.io/docs/reference/kubectl/generated/kubectl_run/); with ``-i`` its
container has ``stdin: true, stdinOnce: true``.  Attached, the command waits for the pod by
watching it, then attaches (``knemu.cli.commands.attach``): our stdin goes to the container's and is
closed when ours ends, so ``echo x | knemu run -i ... -- cat`` sees EOF; its output streams
from the start of its run; the command exits with the container's exit code.  A container
that ended before the attach could be made has its logs printed instead, as kubectl falls
back to logs.  A pod that does not start says why (waiting reason, conditions, warning
events).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from knemu.cli.client import ApiClient, Obj, StatusError, resolve_kind
from knemu.cli.commands.attach import attach_stream
from knemu.cli.commands.exec import StreamRefused
from knemu.cli.commands.logs import (
    PODS,
    container_ended,
    container_state,
    follow_until_ended,
    stream_logs,
)
from knemu.errors import LocalError

log = logging.getLogger(__name__)
ENDED_S = 2.0  # after a refused attach, how long the container's end may take to be reported


def run_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="pod name")
    parser.add_argument("legacy_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--image", required=True, help="container image (see DESIGN: workloads)")
    parser.add_argument("--restart", choices=("Always", "OnFailure", "Never"), default="Always")
    parser.add_argument("--rm", action="store_true", help="delete the pod when it ends (needs -i)")
    parser.add_argument(
        "-i", "--stdin", action="store_true", help="attach: pass stdin, stream its output"
    )
    parser.add_argument("-t", "--tty", action="store_true", help="accepted; knemu has no TTYs")
    parser.add_argument(
        "--command",
        dest="use_command",
        action="store_true",
        help="the words after -- are the command, not args",
    )
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--port", type=int, default=None, help="containerPort to declare")
    parser.add_argument("-l", "--labels", default="", metavar="k=v,...")
    parser.add_argument(
        "--pod-running-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for the pod to start",
    )


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalError(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def pod_manifest(args: argparse.Namespace, namespace: str) -> Obj:
    """The Pod ``kubectl run`` would create for these flags."""
    words = list(getattr(args, "command", None) or args.legacy_args)
    container: Obj = {"name": args.name, "image": args.image}
    if words:
        container["command" if args.use_command else "args"] = words
    env = _pairs(args.env, "--env")
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if args.port is not None:
        container["ports"] = [{"containerPort": args.port}]
    if args.stdin:
        container.update(stdin=True, stdinOnce=True)
    labels = {"run": args.name} | _pairs([p for p in args.labels.split(",") if p], "--labels")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": args.name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [container], "restartPolicy": args.restart},
    }


def run_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    if args.rm and not args.stdin:
        raise LocalError("--rm should only be used for attached containers: add -i")
    namespace = args.namespace or "default"
    created = client.create(PODS, namespace, pod_manifest(args, namespace))
    if not args.stdin:
        print(f"pod/{args.name} created")
        return 0
    try:
        return _attach(client, namespace, created, args.pod_running_timeout)
    finally:
        if args.rm:
            _remove(client, namespace, args.name)


def _remove(client: ApiClient, namespace: str, name: str) -> None:
    try:
        client.delete(PODS, namespace, name)
    except StatusError as exc:
        if not exc.not_found:
            raise
    print(f'pod "{name}" deleted')


def _started(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    state = container_state(pod)
    return (
        phase in ("Running", "Succeeded", "Failed") or "running" in state or "terminated" in state
    )


def _attach(client: ApiClient, namespace: str, created: Obj, timeout_s: float) -> int:
    name = created["metadata"]["name"]
    pod = client.wait_for(PODS, namespace, name, _started, timeout_s)
    if pod is None:
        raise LocalError(_pending_reason(client, namespace, name, timeout_s))
    container = created["spec"]["containers"][0]["name"]
    if not container_ended(container)(pod):
        try:
            return attach_stream(client, namespace, name, container, True, from_start=True)
        except StreamRefused as exc:  # nothing was streamed: the logs have all of it
            log.info("couldn't attach to pod/%s, falling back to streaming logs: %s", name, exc)
            # Usually it ended between our read and the attach: its status says so at once.
            ended = client.wait_for(PODS, namespace, name, container_ended(container), ENDED_S)
            pod = ended or pod
    return _logs_until_ended(client, namespace, pod, container)


def _logs_until_ended(client: ApiClient, namespace: str, pod: Obj, container: str) -> int:
    """Print the container's output until it ends; its exit code from the pod's status."""
    name = pod["metadata"]["name"]
    if container_ended(container)(pod):
        stream_logs(client, namespace, name, container, follow=False)
    else:
        pod = asyncio.run(follow_until_ended(client, namespace, name, container))
    terminated = container_state(pod).get("terminated") or {}
    return int(terminated.get("exitCode", 0 if pod["status"].get("phase") == "Succeeded" else 1))


def _pending_reason(client: ApiClient, namespace: str, name: str, timeout_s: float) -> str:
    """Why the pod is not running: container waiting state, false conditions, warning events."""
    pod = client.get(PODS, namespace, name)
    status = pod.get("status") or {}
    waiting = container_state(pod).get("waiting") or {}
    why = [f"{waiting.get('reason')}: {waiting.get('message', '')}".strip()] if waiting else []
    why += [
        f"{c.get('reason') or c.get('type')}: {c['message']}"
        for c in status.get("conditions") or []
        if c.get("status") != "True" and c.get("message")
    ]
    for event in _warnings(client, namespace, name):
        text = f"{event.get('reason')}: {event.get('message')}"
        if not any(event.get("message", "") in w for w in why):
            why.append(text)
    detail = "; ".join(why) or "no events explain it (is a node agent running? knemu get nodes)"
    phase = status.get("phase", "Pending")
    return f'pod "{name}" did not start within {timeout_s:g}s (phase {phase}): {detail}'


def _warnings(client: ApiClient, namespace: str, name: str) -> list[Obj]:
    selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
    try:
        events = client.list(resolve_kind("events"), namespace, field_selector=selector)
    except StatusError:
        return []
    items = [e for e in events.get("items") or [] if e.get("type") == "Warning"]
    return sorted(items, key=lambda e: str(e.get("lastTimestamp") or ""))[-3:]
