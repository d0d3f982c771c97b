"""hostd.bridge.spec: the hostd block of a bridged plugin's configuration (PROTOCOL.md §15)."""

from __future__ import annotations

import base64

import pytest

from hostd.bridge.spec import (
    DEFAULT_TIMEOUT_S,
    RELAY_FAMILIES,
    BridgeConfigError,
    BridgeSpec,
    decode_config_yaml,
    family_of,
    parse_bridge_spec,
)

# What CLIProxyAPI sends: the plugin's whole block, re-marshalled by yaml.v3 (4-space indent),
# with enabled and priority filled in, and the plugin's own settings beside hostd.
PROXY_BLOCK = b"""enabled: true
priority: 1
hostd:
    command: ["python3", "/opt/plugins/my_plugin.py"]
    args: ["--config", "/etc/hostd/hostd.toml"]
    relay: [http, model]
    timeout_s: 30
api_key: sk-very-secret
"""


def test_the_proxy_block_gives_command_args_relay_and_timeout() -> None:
    spec = parse_bridge_spec(PROXY_BLOCK)
    assert spec == BridgeSpec(
        command=("python3", "/opt/plugins/my_plugin.py"),
        native=None,
        args=("--config", "/etc/hostd/hostd.toml"),
        relay=frozenset({"http", "model"}),
        timeout_s=30.0,
    )


def test_defaults_relay_every_family_and_wait_600_seconds() -> None:
    spec = parse_bridge_spec("hostd:\n  native: /opt/plugins/legacy.so\n")
    assert spec.native == "/opt/plugins/legacy.so"
    assert spec.command is None
    assert spec.args == ()
    assert spec.relay == RELAY_FAMILIES == {"http", "model", "auth", "log", "routing", "affinity"}
    assert spec.timeout_s == DEFAULT_TIMEOUT_S == 600.0


def test_an_empty_relay_list_relays_nothing() -> None:
    spec = parse_bridge_spec("hostd: {command: [p], relay: []}")
    assert spec.relay == frozenset()
    assert not spec.relays("host.http.do")


def test_the_spec_is_frozen_and_compares_by_value() -> None:
    a = parse_bridge_spec("hostd: {command: [p, q]}")
    assert a == parse_bridge_spec("hostd:\n  command:\n    - p\n    - q\n")
    assert a != parse_bridge_spec("hostd: {command: [p, q], timeout_s: 5}")
    with pytest.raises(AttributeError):
        a.timeout_s = 1  # type: ignore[misc]


def test_relays_names_the_family_of_a_host_method() -> None:
    spec = parse_bridge_spec("hostd: {command: [p], relay: [http, log, routing]}")
    assert spec.relays("host.http.do_stream")
    assert spec.relays("host.log")
    assert spec.relays("host.routing.reset_cooldown")
    assert not spec.relays("host.model.execute")
    assert not spec.relays("host.stream.emit")
    assert family_of("host.affinity.lookup") == "affinity"
    assert family_of("host.stream.close") is None
    assert family_of("hostd.hello") is None


def test_base64_config_yaml_decodes_as_go_encodes_it() -> None:
    raw = base64.b64encode(PROXY_BLOCK).decode()
    assert decode_config_yaml(raw) == PROXY_BLOCK
    assert decode_config_yaml(None) == b""
    with pytest.raises(BridgeConfigError, match=r"^hostd: config_yaml is not valid base64$"):
        decode_config_yaml("not base64!")
    with pytest.raises(BridgeConfigError, match="base64 string"):
        decode_config_yaml(12)


@pytest.mark.parametrize(
    ("yaml_text", "reason"),
    [
        ("", "must be a mapping with a hostd block"),
        ("- a\n- b\n", "must be a mapping with a hostd block"),
        ("enabled: true\n", "has no hostd block"),
        ("hostd: [a]\n", "hostd must be a mapping"),
        ("hostd: {}\n", "exactly one of hostd.command and hostd.native"),
        ("hostd: {command: [p], native: /x.so}\n", "exactly one of hostd.command and hostd.native"),
        ("hostd: {command: p}\n", "hostd.command must be a list of strings"),
        ("hostd: {command: []}\n", "hostd.command must name a program"),
        ("hostd: {command: [p, 3]}\n", r"hostd.command\[1\] must be a string"),
        ("hostd: {native: ''}\n", "hostd.native must be the path"),
        ("hostd: {command: [p], args: --x}\n", "hostd.args must be a list of strings"),
        ("hostd: {command: [p], args: [--listen, 'unix:/x']}\n", "may not set --listen"),
        ("hostd: {command: [p], args: ['--control=unix:/x']}\n", "may not set --control"),
        ("hostd: {command: [p], args: [--name, x]}\n", "may not set --name"),
        ("hostd: {command: [p], args: [--native, /x.so]}\n", "may not set --native"),
        ("hostd: {command: [p], args: [--, q]}\n", "may not contain --"),
        ("hostd: {command: [p], relay: [http, stream]}\n", "unknown family stream"),
        ("hostd: {command: [p], relay: http}\n", "hostd.relay must be a list"),
        ("hostd: {command: [p], timeout_s: 0}\n", "positive number"),
        ("hostd: {command: [p], timeout_s: .nan}\n", "positive number"),
        ("hostd: {command: [p], timeout_s: '5'}\n", "must be a number"),
        ("hostd: {command: [p], timeout_s: true}\n", "must be a number"),
        ("hostd: {comand: [p]}\n", r"unknown key hostd.comand \(known: command, native"),
    ],
)
def test_a_bad_block_is_refused_with_the_reason(yaml_text: str, reason: str) -> None:
    with pytest.raises(BridgeConfigError, match=reason) as info:
        parse_bridge_spec(yaml_text)
    assert str(info.value).startswith("hostd: ")
    assert info.value.code == "invalid_config"


def test_invalid_yaml_names_the_line_but_never_quotes_the_document() -> None:
    text = "api_key: sk-very-secret\nhostd: {command: [p]\n"
    with pytest.raises(BridgeConfigError) as info:
        parse_bridge_spec(text)
    message = str(info.value)
    assert message.startswith("hostd: config_yaml is not valid YAML at line ")
    assert "sk-very-secret" not in message
    assert "command" not in message
