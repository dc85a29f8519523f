"""Attach (``kubectl attach``, ``kubectl run -i``): the sans-I/O rules; the websocket adapter
is ``kubelet.attach``.

Attach connects a client to the stdin and output of a container's main process, which is
already running (unlike exec, which starts a new one).  The container fields that govern it,
from the core/v1 Container reference (https://kubernetes.io/docs/reference/kubernetes-api/
workload-resources/pod-v1/#Container):

* ``stdin``: "allocate a buffer for stdin in the container runtime" -- the agent starts the
  process with a pipe it holds across attach sessions; without it, the process reads
  /dev/null and attaching with stdin is refused.
* ``stdinOnce``: "stdin is opened on container start, is empty until the first client attaches
  to stdin, and then remains open and accepts data until the client disconnects, at which
  time stdin is closed and remains closed until the container is restarted.  If this flag is
  false, a container processes that reads from stdin will never receive an EOF."  A client
  closing its stdin ([255, 0]) ends its stdin as a disconnect does: kubectl's ``echo x |
  kubectl run -i`` relies on that for the command to see EOF.

Output: the agent writes each container's stdout and stderr to one log file (the source of
``logs``), so an attach session streams that file from the moment it attaches, both streams on
one channel.  ``fromStart`` is a knemu extension (Docker's attach ``logs=1``) that begins at
the start of the current run instead: ``knemu run -i`` sets it so a quick command's output is
not lost between the container's start and the attach, a window ``kubectl run -i`` has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from knemu.errors import LocalError

STDOUT, STDERR = 1, 2  # channel numbers (v4.channel.k8s.io)
_TRUE = ("1", "true", "True")


@dataclass(frozen=True)
class AttachOptions:
    """The query of an attach request (PodAttachOptions, plus knemu's ``fromStart``)."""

    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    from_start: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AttachOptions:
        options = cls(*(query.get(k) in _TRUE for k in ("stdin", "stdout", "stderr", "fromStart")))
        if not (options.stdin or options.stdout or options.stderr):
            # The kubelet's own wording (remotecommand.NewOptions).
            raise LocalError("you must specify at least 1 of stdin, stdout, stderr")
        return options

    @property
    def output_channel(self) -> int | None:
        """Where the log's bytes go: stdout's channel, else stderr's, else nowhere."""
        return STDOUT if self.stdout else STDERR if self.stderr else None


def check_attach(
    options: AttachOptions, pod: str, container: str, declares_stdin: bool, state: str
) -> None:
    """Refuse an attach the container cannot serve, saying what to do instead."""
    if state != "running":
        raise LocalError(
            f"cannot attach to container {container} of pod {pod}: it is {state}, not running; "
            f"its output so far is in `knemu logs {pod.partition('/')[2]} -c {container}`"
        )
    if options.stdin and not declares_stdin:
        raise LocalError(
            f"cannot attach stdin to container {container} of pod {pod}: it was not created "
            "with stdin: true, so its stdin is /dev/null; attach without -i to watch its "
            "output, or create the pod with stdin: true (knemu run -i does)"
        )


@dataclass
class StdinCore:
    """The stdin of one run of a container across its attach sessions (stdinOnce rule)."""

    once: bool
    closed: bool = False

    def on_session_stdin_ended(self) -> bool:
        """A session's stdin ended (its client closed stdin or went away).

        True when the container's stdin must be closed now: with stdinOnce the first such end
        closes it for good; without it, the container never sees EOF.
        """
        if self.once and not self.closed:
            self.closed = True
            return True
        return False
