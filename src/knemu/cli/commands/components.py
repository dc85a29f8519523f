"""``knemu apiserver | agent | dns``: build a component's config from flags and run it.

Flags come from a table, not an if-chain: every field of the component's config dataclass
(``knemu.config``) gets ``--field-name`` automatically, nested dataclasses (``timings``) too,
so nothing is unreachable; ``FLAG_EXTRAS`` adds kubectl-style aliases, choices and help.
Precedence: dataclass defaults < ``--timings`` preset < ``--config FILE`` (YAML mapping with
the same keys) < explicit flags.  The mapping is validated by ``from_mapping`` (unknown keys
and bad values are ``ConfigError``: exit code 2 with the message).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from knemu.config import (
    IPVS_SCHEDULERS,
    NETWORK_BACKENDS,
    PROXY_MODES,
    AgentConfig,
    ApiServerConfig,
    DnsConfig,
    Timings,
)
from knemu.errors import ConfigError, KnemuError

C = TypeVar("C")

TIMING_PRESETS: dict[str, Callable[[], Timings]] = {
    "fast": Timings,
    "kubernetes": Timings.kubernetes,
}


@dataclass(frozen=True)
class FlagExtra:
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    help: str = ""


CNI_CONF_DIR_HELP = (
    "where 10-knemu.conflist goes (empty: /etc/cni/net.d with the default --state-dir, "
    "else STATE_DIR/cni/net.d)"
)
# Extra names and help for some fields; every other field still gets its --field-name flag.
FLAG_EXTRAS: dict[str, FlagExtra] = {
    "data_dir": FlagExtra(help="where the SQLite store lives (survives restarts)"),
    "listen": FlagExtra(help="HOST:PORT to listen on"),
    "grpc_listen": FlagExtra(help="HOST:PORT for the gRPC watch/registration service"),
    "timings.node_grace_s": FlagExtra(help="no lease renewal for this long -> node NotReady"),
    "timings.eviction_toleration_s": FlagExtra(help="NotReady this long -> pods evicted"),
    "apiserver": FlagExtra(help="gRPC HOST:PORT of the api-server"),
    "node_name": FlagExtra(help="node name (default: assigned node-N)"),
    "underlay_ip": FlagExtra(help="this node's address on the node network"),
    "proxy_mode": FlagExtra(choices=PROXY_MODES, help="kube-proxy mode"),
    "backend": FlagExtra(
        choices=NETWORK_BACKENDS, help="pod network: vxlan (default) or ipip (Calico IPIP)"
    ),
    "ipvs_scheduler": FlagExtra(choices=IPVS_SCHEDULERS, help="scheduler in ipvs mode"),
    "vxlan_source_ports": FlagExtra(
        help="outer UDP source ports LOW-HIGH, one per inner flow (RFC 7348), or one port"
    ),
    "vxlan_df": FlagExtra(choices=("unset", "set"), help="outer DF bit, as Linux vxlan's df"),
    "pod_mtu_bytes": FlagExtra(aliases=("--mtu",), help="pods' MTU (0: underlay MTU minus 50)"),
    "kubelet_listen_port": FlagExtra(aliases=("--kubelet-port",), help="agent HTTP API port"),
    "dns_upstream": FlagExtra(help="HOST:PORT of knemu dns, where pod DNS queries go"),
    "seed": FlagExtra(help="seed for random choices (iptables mode, faults)"),
    "network_policy": FlagExtra(help="enforce NetworkPolicy like Calico (--no-...: like flannel)"),
    "cni_conf_dir": FlagExtra(help=CNI_CONF_DIR_HELP),
    "host_ports": FlagExtra(help="publish pods' hostPorts (the CNI portmap plugin)"),
    "tun_offload": FlagExtra(help="pods' TUNs with TSO/GRO (virtio-net headers), experimental"),
    "zone": FlagExtra(help="the cluster domain served"),
    "upstream": FlagExtra(help="HOST:PORT for names outside the zone (empty: REFUSED)"),
    "pods_mode": FlagExtra(choices=("insecure", "verified", "disabled"), help="CoreDNS pods mode"),
}


@dataclass(frozen=True)
class FieldFlag:
    path: str  # "listen" or "timings.node_grace_s"
    dest: str
    names: tuple[str, ...]
    type: type
    default: Any


def field_flags(cls: type, prefix: str = "") -> Iterator[FieldFlag]:
    """One flag per (nested) field of a config dataclass."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        path = prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from field_flags(type(value), path + ".")
            continue
        extra = FLAG_EXTRAS.get(path, FlagExtra())
        names = ("--" + f.name.replace("_", "-"), *extra.aliases)
        yield FieldFlag(path, "cfg_" + path.replace(".", "__"), names, type(value), value)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML file with settings (same keys)")
    if any(f.path.startswith("timings.") for f in field_flags(cls)):
        parser.add_argument(
            "--timings",
            choices=tuple(TIMING_PRESETS),
            default=None,
            help="node lifecycle preset: fast (default) or kubernetes",
        )
    for flag in field_flags(cls):
        extra = FLAG_EXTRAS.get(flag.path, FlagExtra())
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": None}
        if flag.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = flag.type
            if not extra.choices:
                kwargs["metavar"] = flag.path.rsplit(".", 1)[-1].upper()
        if extra.choices:
            kwargs["choices"] = extra.choices
        kwargs["help"] = f"{extra.help + '; ' if extra.help else ''}default {flag.default!r}"
        parser.add_argument(*flag.names, **kwargs)


def _file_settings(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of settings, got {type(loaded).__name__}"
        )
    return loaded


def build_config(cls: type[C], args: argparse.Namespace) -> C:
    """The validated config: defaults < --timings < --config FILE < flags."""
    settings = _file_settings(getattr(args, "config", None))
    timing_values: dict[str, Any] = {}
    preset = getattr(args, "timings", None)
    if preset:
        timing_values = dataclasses.asdict(TIMING_PRESETS[preset]())
    file_timings = settings.pop("timings", None) or {}
    if not isinstance(file_timings, dict):
        raise ConfigError("timings: expected a mapping such as {node_grace_s: 40}")
    timing_values.update(file_timings)
    for flag in field_flags(cls):
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        if flag.path.startswith("timings."):
            timing_values[flag.path.split(".", 1)[1]] = value
        else:
            settings[flag.path] = value
    try:
        if timing_values:
            settings["timings"] = Timings.from_mapping(timing_values)
        return cls.from_mapping(settings)  # type: ignore[attr-defined, no-any-return]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def _run_component(module: str, config: Any) -> int:
    try:
        runner = importlib.import_module(module).run
    except (ImportError, AttributeError) as exc:
        raise KnemuError(
            f"{module}.run is not available ({exc}); is knemu installed completely?"
        ) from None
    return int(runner(config))


def apiserver_add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ApiServerConfig)


def apiserver_run(args: argparse.Namespace) -> int:
    return _run_component("knemu.apiserver.server", build_config(ApiServerConfig, args))


def agent_add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, AgentConfig)


def agent_run(args: argparse.Namespace) -> int:
    return _run_component("knemu.node_agent.agent", build_config(AgentConfig, args))


def dns_add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DnsConfig)


def dns_run(args: argparse.Namespace) -> int:
    return _run_component("knemu.dns.server", build_config(DnsConfig, args))
