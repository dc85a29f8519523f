"""The agent's end of a container's stdin pipe (Container ``stdin: true``), held across attach
sessions; when it closes follows ``attach_rules.StdinCore`` (the stdinOnce rule).

The pipe is made here rather than with ``asyncio.subprocess.PIPE`` because asyncio's
``Process.wait()`` also waits for every pipe it created to close: a child that inherited the
container's stdin would then keep the container "running" after its main process exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from knemu.node_agent.runtime.attach_rules import StdinCore


class ContainerStdin:
    """Write end of one run's stdin pipe: attach sessions write to it, the rules close it."""

    def __init__(self, core: StdinCore, writer: asyncio.StreamWriter) -> None:
        self.core = core
        self._writer = writer

    @classmethod
    async def open(cls, once: bool) -> tuple[ContainerStdin, int]:
        """A new pipe: its holder and the read end's descriptor, which the caller hands to the
        process as stdin and then closes."""
        read_fd, write_fd = os.pipe()  # both non-inheritable; spawning dup2()s read_fd to 0
        loop = asyncio.get_running_loop()
        protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader())
        try:
            pipe = os.fdopen(write_fd, "wb", buffering=0)
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        try:
            transport, _ = await loop.connect_write_pipe(lambda: protocol, pipe)
        except BaseException:
            pipe.close()
            os.close(read_fd)
            raise
        return cls(StdinCore(once), asyncio.StreamWriter(transport, protocol, None, loop)), read_fd

    @property
    def closed(self) -> bool:
        return self.core.closed or self._writer.is_closing()

    async def write(self, data: bytes) -> None:
        """Pass bytes on; dropped once stdin is closed (the process sees no more input)."""
        if self.closed:
            return
        self._writer.write(data)
        with contextlib.suppress(ConnectionError):  # the process exited: EPIPE
            await self._writer.drain()

    def session_stdin_ended(self) -> None:
        """An attached client's stdin ended: close the container's if stdinOnce says so."""
        if self.core.on_session_stdin_ended():
            self.close()

    def close(self) -> None:
        """EOF for the process once buffered bytes are written (the run ended, or stdinOnce)."""
        self.core.closed = True
        self._writer.close()
