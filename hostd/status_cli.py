"""``hostd status``: ask the control endpoint for ``hostd.status`` and print it for people (or as JSON).

Exit codes as ``hostd call``: 0 on success, 1 on a JSON-RPC error or no answer, 2 when it
cannot connect.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import orjson

from hostd.client import Client, ConnectionClosed, RpcError

TIMEOUT_S = 10.0
KIND_COLUMNS = ("http", "model", "emit")


def show_status(address: str, as_json: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
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
    if as_json:
        out.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
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
