"""The node's BGP speaker: a BIRD 2 process the agent runs, configures and reads (asyncio).

Like Calico's node container (BIRD plus confd): the configuration is rendered by
``backends.bird.render`` whenever the set of peer nodes changes and BIRD is told to reload it
(``birdc configure``); BIRD announces this node's podCIDR, learns the others' over BGP and
writes them into the kernel's routing table, which forwards pod packets natively.  The status
(sessions, learned routes) is read from BIRD's control socket every ``poll_s`` and kept for
``GET /table`` (``knemu bgp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.backends import bird

log = logging.getLogger(__name__)
POLL_S = 1.0


def _die_with_parent() -> None:
    """BIRD goes when the agent goes, even on SIGKILL (prctl PR_SET_PDEATHSIG): a killed node
    stops speaking BGP, and no speaker outlives its node."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class BgpSpeaker:
    def __init__(
        self,
        cfg: bird.BgpConfig,
        state_dir: Path,
        poll_s: float = POLL_S,
        reflector_nodes: tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        # Node names of the route reflectors (``--bgp-route-reflectors``; empty: full mesh);
        # their underlay IPs are taken from the peers' Node objects as they arrive.
        self.reflector_nodes = reflector_nodes
        if cfg.node in reflector_nodes:
            self.cfg = bird.BgpConfig(**{**cfg.__dict__, "route_reflectors": (cfg.underlay_ip,)})
        self.conf = state_dir / "bird.conf"
        self.ctl = state_dir / "bird.ctl"
        self._poll_s = poll_s
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self.status: dict[str, Any] = {"sessions": [], "routes": []}

    async def start(self) -> None:
        if shutil.which("bird") is None:
            raise ConfigError("backend bgp needs BIRD 2 (Debian: apt-get install bird2)")
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        await self._spawn()
        self._task = asyncio.create_task(self._run(), name="bgp-speaker")

    def _write_conf(self) -> None:
        """Atomically (rename): BIRD, starting or reconfiguring, never reads half a file."""
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(bird.render(self.cfg))
        os.replace(tmp, self.conf)

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            "bird", "-f", "-c", str(self.conf), "-s", str(self.ctl),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip

    def set_peers(self, peers: dict[str, str]) -> None:
        """The peer nodes' underlay IPs changed: rewrite the configuration and reload."""
        ips = tuple(sorted(peers.values()))
        reflectors = tuple(sorted(ip for name, ip in peers.items() if name in self.reflector_nodes))
        if self.cfg.node in self.reflector_nodes:
            reflectors = tuple(sorted((*reflectors, self.cfg.underlay_ip)))
        if ips != self.cfg.peers or reflectors != self.cfg.route_reflectors:
            changes = {"peers": ips, "route_reflectors": reflectors}
            self.cfg = bird.BgpConfig(**{**self.cfg.__dict__, **changes})
            self._dirty.set()

    async def _birdc(self, *cmd: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "birdc", "-s", str(self.ctl), *cmd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out.decode(errors="replace")

    async def _reload(self) -> bool:
        """``birdc configure``; False when birdc could not reach BIRD (e.g. BIRD has only just
        started and has no control socket yet), so the caller tries again."""
        proc = await asyncio.create_subprocess_exec(
            "birdc", "-s", str(self.ctl), "configure",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            log.warning("birdc configure failed (retrying): %s", out.decode(errors="replace"))
            return False
        return True

    async def _run(self) -> None:
        pending = False  # a configuration BIRD has not loaded yet: retried every poll
        while True:
            if self._proc is not None and self._proc.returncode is not None:
                # A speaker that died (a bad reload, a crash) is started again with the
                # current configuration: a node must not stay without BGP.
                log.warning("BIRD exited with %s; starting it again", self._proc.returncode)
                self._write_conf()
                await self._spawn()
                pending = False
            if self._dirty.is_set() or pending:
                self._dirty.clear()
                self._write_conf()
                try:
                    pending = not await self._reload()
                except OSError as exc:
                    log.warning("birdc failed: %s", exc)
                    pending = True
            try:
                sessions = bird.parse_protocols(await self._birdc("show", "protocols"))
                routes = bird.parse_routes(
                    await self._birdc("show", "route", "where", "source", "=", "RTS_BGP")
                )
            except OSError as exc:
                log.warning("birdc failed: %s", exc)
            else:
                self.status = self.snapshot(sessions, routes)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._poll_s)

    def snapshot(self, sessions: list[bird.Session], routes: list[bird.Route]) -> dict[str, Any]:
        return {
            "asn": self.cfg.asn,
            "hold_time_s": self.cfg.hold_time_s,
            "router_id": self.cfg.underlay_ip,
            "route_reflectors": list(self.cfg.route_reflectors),
            "sessions": [
                {"peer": s.name, "state": s.state, "since": s.since, "info": s.info}
                for s in sessions
            ],
            "routes": [{"prefix": r.prefix, "via": r.via, "protocol": r.protocol} for r in routes],
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
