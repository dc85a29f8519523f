"""Partitions in the node's kernel for backend bgp (asyncio adapter around ``nft``).

With native routing the node's kernel carries everything a partition must cut: BIRD's BGP
sessions and the pod packets it forwards by BGP's routes; the agent's own underlay socket,
where the other impairments act, carries nothing.  So the agent mirrors its partitions
(``faults.Impairments.partitions``) into an nftables table of its namespace
(``faults.partition_rules``, rendered sans-I/O) whenever they or the peer nodes change, and
removes the table when it stops.  Delay, loss and the rest stay on the agent's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping

from knemu.node_agent.dataplane.faults import NFT_TABLE, Impairments, partition_rules

log = logging.getLogger(__name__)


class KernelPartitions:
    def __init__(
        self, faults: Impairments, peers: Callable[[], Mapping[str, tuple[str, str]]]
    ) -> None:
        self._faults = faults
        self._peers = peers  # node name -> (underlay IP, podCIDR)
        self._dirty = asyncio.Event()
        self._applied = False

    def changed(self) -> None:
        """Partitions or peers changed: re-render (the loop applies it)."""
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            partitions = self._faults.partitions()
            if not partitions and not self._applied:
                continue
            await self._nft(partition_rules(partitions, self._peers()))
            self._applied = True

    async def close(self) -> None:
        if self._applied:
            await self._nft(f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")
            self._applied = False

    @staticmethod
    async def _nft(script: str) -> None:
        exe = shutil.which("nft")
        if exe is None:
            log.warning("backend bgp: partitions need nft (Debian: nftables); not applied")
            return
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                exe, "-f", "-", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate(script.encode())
            if proc.returncode != 0:
                log.warning("nft -f failed: %s", out.decode(errors="replace").strip())
