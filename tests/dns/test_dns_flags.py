"""`python -m knemu.dns` flags map onto DnsConfig; bad values are named, exit code 2."""

from __future__ import annotations

import argparse

import pytest

from knemu.config import DnsConfig
from knemu.dns.flags import add_arguments, config_from_args, main
from knemu.errors import ConfigError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_defaults_only_when_given() -> None:
    args = _parse("--listen", "10.244.1.1:53", "--ttl-s", "30", "--pods-mode", "verified",
                  "--upstream", "127.0.0.1:53")  # fmt: skip
    expected = DnsConfig(listen="10.244.1.1:53", ttl_s=30, pods_mode="verified",
                         upstream="127.0.0.1:53")  # fmt: skip
    assert config_from_args(args) == expected
    assert config_from_args(_parse()) == DnsConfig()


def test_bad_values_are_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="pods_mode"):
        config_from_args(_parse("--pods-mode", "sometimes"))
    assert main(["--listen", "no-port"]) == 2
    assert "listen: 'no-port' is not HOST:PORT" in capsys.readouterr().err
