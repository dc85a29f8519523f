"""What every kubelet stream handler answers with: the channel protocol's constants, Kubernetes
``Status`` error bodies and the exit status kubelet sends on channel 3 (shared by exec, attach
and port-forward, so none of them imports another)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from knemu.errors import KnemuError

EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v5.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255


def status_body(exc: KnemuError) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": exc.message,
            "reason": exc.reason, "code": exc.http_status}  # fmt: skip


def error_response(exc: KnemuError) -> web.Response:
    return web.json_response(status_body(exc), status=exc.http_status)


def exit_status(code: int) -> bytes:
    """Channel-3 payload kubelet sends when the command ends (remotecommand/errorstream)."""
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps({
        "metadata": {}, "status": "Failure", "message": f"command terminated with exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }).encode()  # fmt: skip
