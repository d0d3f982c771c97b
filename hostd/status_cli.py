"""``hostd status``: ask the control endpoint for ``hostd.status`` and print it for people, as
JSON, or in the Prometheus text exposition format (for node-exporter's textfile collector).

Exit codes as ``hostd call``: 0 on success, 1 on a JSON-RPC error or no answer, 2 when it
cannot connect.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any, TextIO

import orjson

from hostd.client import Client, ConnectionClosed, RpcError

TIMEOUT_S = 10.0
KIND_COLUMNS = ("http", "model", "emit")


def show_status(address: str, as_json: bool = False, out: TextIO | None = None, fmt: str | None = None) -> int:
    """Print hostd's status in ``fmt`` (``table``, ``json`` or ``prometheus``)."""
    out = out or sys.stdout
    fmt = fmt or ("json" if as_json else "table")
    if not address:
        print("hostd status: no control socket (pass --control unix:PATH or set HOSTD_CONTROL)", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(_fetch(address))
    except (OSError, ValueError) as e:
        print(f"hostd status: cannot connect to {address}: {e}", file=sys.stderr)
        return 2
    except RpcError as e:
        print(orjson.dumps({"error": e.error}).decode(), file=sys.stderr)
        return 1
    except (TimeoutError, ConnectionClosed):
        print("hostd status: no answer from hostd", file=sys.stderr)
        return 1
    if fmt == "json":
        out.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "prometheus":
        out.write(prometheus(status))
    else:
        out.write(render(status))
    return 0


async def _fetch(address: str) -> dict[str, Any]:
    async with await Client.connect(address) as client:
        result = await client.call("hostd.status", {}, timeout=TIMEOUT_S)
    if not isinstance(result, dict):
        raise ConnectionClosed("hostd.status did not return an object")
    return result


def render(status: dict[str, Any]) -> str:
    """The status as a table: one row per plugin session, then the totals."""
    sessions: list[dict[str, Any]] = status.get("sessions") or []
    lines = [
        f"hostd {status.get('version', '?')}, up {_duration(float(status.get('uptime_s') or 0))}, "
        f"{len(sessions)} plugin session{'' if len(sessions) == 1 else 's'}, "
        f"{status.get('control_sessions', 0)} control"
    ]
    lines += _daemon_lines(status)
    header = ["SESSION", "PLUGIN", "PID", "UID", "OPENED", "IN-FLIGHT", *(k.upper() for k in KIND_COLUMNS)]
    rows = [header]
    for s in sessions:
        streams = s.get("streams") or {}
        rows.append(
            [
                str(s.get("session", "")),
                str(s.get("plugin_id", "")),
                _opt(s.get("peer_pid")),
                _opt(s.get("peer_uid")),
                str(s.get("opened_at", "")),
                str(s.get("in_flight", 0)),
                *(str(streams.get(kind, 0)) for kind in KIND_COLUMNS),
            ]
        )
    if sessions:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    else:
        lines.append("no plugin sessions")
    buffered = status.get("buffered") or {}
    if buffered:
        lines.append("buffered: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in buffered.items()))
    totals = status.get("totals") or {}
    lines.append("totals: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in totals.items()))
    return "\n".join(lines) + "\n"


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def _duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{seconds:.1f}s"


def _daemon_lines(status: dict[str, Any]) -> list[str]:
    """Listen addresses, config file and limits, when hostd.status reports them."""
    lines = []
    if "listen" in status:
        listen = status.get("listen") or []
        lines.append("listen: " + (", ".join(str(a) for a in listen) if listen else "-"))
    if "control" in status:
        lines.append(f"control: {status.get('control') or '-'}")
    if "config_file" in status:
        lines.append(f"config: {status.get('config_file') or '(none: defaults, environment and flags)'}")
    limits = status.get("limits")
    if isinstance(limits, dict) and limits:
        lines.append("limits: " + ", ".join(f"{key} {value}" for key, value in limits.items()))
    return lines


# Prometheus text exposition format 0.0.4 -------------------------------------------------

_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _metric(name: str) -> str:
    return "hostd_" + _METRIC_NAME.sub("_", name)


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return None


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], Any]]) -> None:
        rendered = []
        for labels, value in samples:
            number = _number(value)
            if number is None:
                continue
            label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            rendered.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
        if not rendered:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines += rendered


def prometheus(status: dict[str, Any]) -> str:
    """hostd.status as Prometheus metrics: totals are counters, everything else gauges."""
    exp = _Exposition()
    exp.family("hostd_info", "gauge", "hostd version (always 1).", [({"version": status.get("version", "")}, 1)])
    exp.family("hostd_uptime_seconds", "gauge", "Seconds since hostd started.", [({}, status.get("uptime_s"))])
    process = status.get("process") or {}
    for key, help_text in (
        ("rss_bytes", "Resident memory of the hostd process."),
        ("fds", "Open file descriptors of the hostd process."),
        ("tasks", "asyncio tasks in the hostd process."),
    ):
        exp.family(_metric(f"process_{key}"), "gauge", help_text, [({}, process.get(key))])
    sessions: list[dict[str, Any]] = status.get("sessions") or []
    exp.family("hostd_plugin_sessions", "gauge", "Connected plugin sessions.", [({}, len(sessions))])
    exp.family(
        "hostd_control_sessions", "gauge", "Connected control sessions.", [({}, status.get("control_sessions", 0))]
    )
    per_plugin: dict[str, dict[str, int]] = {}
    for s in sessions:
        plugin = str(s.get("plugin_id", ""))
        row = per_plugin.setdefault(plugin, {"sessions": 0, "in_flight": 0, **dict.fromkeys(KIND_COLUMNS, 0)})
        row["sessions"] += 1
        row["in_flight"] += int(s.get("in_flight") or 0)
        for kind, count in (s.get("streams") or {}).items():
            row[kind] = row.get(kind, 0) + int(count or 0)
    exp.family(
        "hostd_plugin_in_flight",
        "gauge",
        "Requests being handled, per plugin id.",
        [({"plugin": p}, row["in_flight"]) for p, row in sorted(per_plugin.items())],
    )
    exp.family(
        "hostd_plugin_open_streams",
        "gauge",
        "Open streams, per plugin id and kind.",
        [
            ({"plugin": p, "kind": kind}, row.get(kind, 0))
            for p, row in sorted(per_plugin.items())
            for kind in KIND_COLUMNS
        ],
    )
    totals = status.get("totals") or {}
    for key, value in totals.items():
        name = _metric(key if key.endswith("_total") else f"{key}_total")
        exp.family(name, "counter", f"hostd.status totals.{key} since start.", [({}, value)])
    buffered = status.get("buffered")
    if isinstance(buffered, dict) and buffered:
        exp.family(
            "hostd_buffered_bytes",
            "gauge",
            "Bytes held now against the daemon-wide limits (hostd.status buffered), by kind.",
            [({"kind": key.removesuffix("_bytes")}, value) for key, value in buffered.items()],
        )
    limits = status.get("limits")
    if isinstance(limits, dict):
        exp.family(
            "hostd_limit",
            "gauge",
            "Configured limits ([limits] and others), by name.",
            [({"name": key}, value) for key, value in limits.items()],
        )
    return "\n".join(exp.lines) + "\n"
