"""The results as Markdown tables (printed, and pasted into docs/performance.md) and the targets."""

from __future__ import annotations

from typing import Any

from bench.common import ROOT

MiB = 1024 * 1024


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return lines


def _calls(data: dict[str, Any]) -> list[str]:
    rows: list[list[str]] = []
    for key, figures in data["servers"].items():
        parts = key.split("/")
        name = parts[0] if parts[0] == "floor" else ("hostd, log written" if len(parts) > 2 else "hostd")
        serial, pipe = figures["serial"], figures["pipeline"]
        ratio = data["ratios"].get(key)
        rows.append(
            [
                name,
                parts[1],
                _n(serial["p50_us"], 1),
                _n(serial["p99_us"], 1),
                _n(serial["calls_per_s"]),
                _n(pipe["calls_per_s"]),
                _n(figures["pipeline_cpu_us_per_call"], 2),
                _x(ratio["serial_p50_vs_floor"]) if ratio else "1.00x",
                _x(ratio["pipeline_vs_floor"]) if ratio else "1.00x",
                (_x(ratio["pipeline_cpu_vs_floor"]) if ratio["pipeline_cpu_vs_floor"] else "n/a") if ratio else "1.00x",
            ]
        )
    head = [
        "server",
        "loop",
        "serial p50 µs",
        "serial p99 µs",
        "serial calls/s",
        f"pipelined calls/s ({data['depth']} in flight)",
        "server CPU µs/call",
        "p50 vs floor",
        "pipelined vs floor",
        "CPU/call: floor ÷ this",
    ]
    return [
        "### Calls: host.log round trip, Unix socket, C load client",
        "",
        *_table(head, rows),
        "",
        "`host.log` at level debug; hostd at `--log-level info` filters it, `log written` runs at "
        "`--log-level debug` with stderr on /dev/null and `[log] plugin_lines_per_s`/`plugin_burst` "
        "raised (every line written, none dropped by the rate limit). Ratios against the floor on the same loop. "
        "Server CPU µs/call: the server process's CPU time over a pipelined run divided by its calls "
        "(what a call costs the server, whatever else the machine runs).",
    ]


def _peer(data: dict[str, Any]) -> list[str]:
    mcp = data["mcp"]
    conc = data["concurrency"]
    rows = [
        [
            "MCP SDK",
            "mcp.Client",
            "ping",
            _n(mcp["ping_serial"]["calls_per_s"]),
            _n(mcp["ping_serial"]["p50_us"], 1),
            _n(mcp["ping_concurrent"]["calls_per_s"]),
            "1.00x",
            "1.00x",
        ],
        [
            "MCP SDK",
            "mcp.Client",
            "tools/call echo",
            _n(mcp["tool_serial"]["calls_per_s"]),
            _n(mcp["tool_serial"]["p50_us"], 1),
            _n(mcp["tool_concurrent"]["calls_per_s"]),
            "",
            "",
        ],
    ]
    py = data["hostd_python_client"]
    ratios = data["ratios"]
    rows.append(
        [
            f"hostd ({data['hostd_loop']})",
            "hostd.client (Python)",
            "host.log",
            _n(py["serial"]["calls_per_s"]),
            _n(py["serial"]["p50_us"], 1),
            _n(py["concurrent"]["calls_per_s"]),
            _x(ratios["python_client_serial_vs_mcp"]),
            _x(ratios["python_client_concurrent_vs_mcp"]),
        ]
    )
    c = data["hostd_c_client"]
    rows.append(
        [
            f"hostd ({data['hostd_loop']})",
            "C load client",
            "host.log",
            _n(c["serial"]["calls_per_s"]),
            _n(c["serial"]["p50_us"], 1),
            _n(c["pipeline"]["calls_per_s"]) + " (pipelined)",
            _x(ratios["c_client_serial_vs_mcp"]),
            _x(ratios["c_client_pipeline_vs_mcp"]),
        ]
    )
    head = [
        "server (stdio)",
        "client",
        "request",
        "serial calls/s",
        "serial p50 µs",
        f"concurrent calls/s ({conc})",
        "serial vs MCP ping",
        "concurrent vs MCP ping",
    ]
    return ["### Peer: MCP Python SDK vs hostd, both over stdio", "", *_table(head, rows)]


def _relay(data: dict[str, Any]) -> list[str]:
    depth = data["depth"]
    rows = []
    for loop, f in data["loops"].items():
        rows.append(
            [
                loop,
                _n(f["direct_httpx"]["mb_per_s"]),
                _n(f["hostd_depth1"]["mb_per_s"]),
                _x(f["ratios"]["hostd_depth1_vs_direct"]),
                _n(f[f"hostd_depth{depth}"]["mb_per_s"]),
                _x(f["ratios"][f"hostd_depth{depth}_vs_direct"]),
            ]
        )
    head = [
        "loop",
        "direct httpx MB/s",
        "hostd, 1 read in flight MB/s",
        "vs direct",
        f"hostd, {depth} reads in flight MB/s",
        "vs direct",
    ]
    return [
        f"### Stream relay: {data['bytes'] // MiB} MiB via host.http.do_stream + stream_read (base64) vs httpx",
        "",
        *_table(head, rows),
    ]


def _model(data: dict[str, Any]) -> list[str]:
    direct = data["direct_httpx"]
    rows = [["direct httpx", _n(direct["events_per_s"]), "1.00x", "", ""]]
    for d in data["depths"]:
        f = data[f"hostd_depth{d}"]
        rows.append(
            [
                f"hostd, {d} read(s) in flight",
                _n(f["events_per_s"]),
                _x(data["ratios"][f"hostd_depth{d}_vs_direct"]),
                _n(f["pieces"]),
                _n(f["events"] / max(1, f["pieces"]), 2),
            ]
        )
    head = ["reader", "events/s", "vs direct", "pieces read", "events per piece"]
    return [
        f"### Model stream relay: host.model.execute_stream + stream_read, {data['events']:,} SSE events "
        f"from the fake proxy ({data['loop']})",
        "",
        *_table(head, rows),
    ]


def _scale(data: dict[str, Any]) -> list[str]:
    left = data.get("hostd_status_streams_left")
    wanted = data.get("streams_wanted", data["streams"])
    opened = _n(data["streams"]) + ("" if data["streams"] >= wanted else f" of {wanted:,} (time budget)")
    rows = [
        [
            opened,
            str(data["connections"]),
            _n(data["opens_per_s"]),
            _n(data["rss_before_bytes"] / MiB, 1),
            _n(data["rss_open_bytes"] / MiB, 1),
            _n(data["rss_per_stream_bytes"] / 1024, 1),
            _n(data["projected_rss_10k_bytes"] / MiB, 1),
            _n(data["close_all_s"] * 1000, 0) + ("" if data.get("all_dropped", True) else " (not all: budget)"),
            "n/a" if left is None else str(left),
        ]
    ]
    head = [
        "streams",
        "connections",
        "opens/s",
        "RSS before MiB",
        "RSS open MiB",
        "KiB per stream",
        "RSS at 10k MiB (projected)",
        "disconnect → all dropped ms",
        "streams left (hostd.status)",
    ]
    return [f"### Scale: open HTTP streams held by one hostd ({data['loop']})", "", *_table(head, rows)]


def _latency(data: dict[str, Any]) -> list[str]:
    rows = []
    heavy_rows = []
    for loop, f in data["loops"].items():
        u, i = f["under_load"], f["idle"]
        rows.append(
            [
                loop,
                _n(u["calls"]),
                _n(u["p50_ms"], 2),
                _n(u["p99_ms"], 2),
                _n(u["max_ms"], 1),
                _n(i["p50_ms"], 3),
                _n(i["p99_ms"], 3),
            ]
        )
        for name, h in f["heavy"].items():
            v = h.get("victim", {})
            heavy_rows.append(
                [
                    name,
                    loop,
                    _n(h["line_bytes"] / MiB, 2),
                    h["outcome"],
                    _n(h["ms_best"], 1),
                    _n(v.get("p99_ms", 0.0), 1),
                    _n(v.get("max_ms", 0.0), 1),
                ]
            )
    head = ["loop", "victim calls", "p50 ms", "p99 ms", "max ms", "idle p50 ms", "idle p99 ms"]
    heavy_head = ["heavy request", "loop", "line MiB", "answer", "answered in ms (best)", "victim p99 ms", "max ms"]
    return [
        "### Latency: a victim's hostd.hello while another session sends the largest request of every method",
        "",
        *_table(head, rows),
        "",
        *_table(heavy_head, heavy_rows),
        "",
        "Victim: one session, `hostd.hello` scheduled every millisecond, latency from the scheduled time "
        "(a late call stands for every call it held up: a loop held 1 s counts as 1,000 late samples), "
        f"while the heavy session sends each request {data['loops'][next(iter(data['loops']))]['repeats']} "
        "time(s), one at a time; victim p99/max per heavy request: the samples taken while it ran. Idle: the "
        f"same victim alone. Goal (PROTOCOL §11): p99 ≤ {data['goal_p99_ms']:.0f} ms.",
    ]


def _native(data: dict[str, Any]) -> list[str]:
    rows = []
    for loop, f in data["loops"].items():
        n, o, inv = f["native_host_log"], f["ordinary_host_log"], f["invoke"]
        r = f["ratios"]
        rows.append(
            [
                loop,
                _n(o["p50_us"], 1),
                _n(o["p99_us"], 1),
                _n(n["p50_us"], 1),
                _n(n["p99_us"], 1),
                _x(r["host_log_p50_native_vs_ordinary"]),
                _x(r["host_log_p99_native_vs_ordinary"]),
                _n(n["p50_us"] - o["p50_us"], 1),
                _n(inv["p50_us"], 1),
                _n(inv["p99_us"], 1),
            ]
        )
    head = [
        "loop",
        "ordinary plugin host.log p50 µs",
        "p99 µs",
        "native plugin thread host.log p50 µs",
        "p99 µs",
        "p50 native ÷ ordinary",
        "p99 native ÷ ordinary",
        "worker adds (p50) µs",
        "hostd.invoke echo p50 µs",
        "p99 µs",
    ]
    return [
        "### Native: host.log round trip from a native plugin thread (hostd run --native) vs an ordinary plugin",
        "",
        *_table(head, rows),
        "",
        "Ordinary plugin: the C load client on hostd's stdio pipes, one call at a time. Native: "
        "`tests/native/testplugin.c`'s `bench.host_log`, timed in C around `host->call` on a plugin thread "
        "(worker → pipe → hostd → pipe → worker). Invoke: `hostd.invoke` of the plugin's `echo` from the "
        "control socket (C load client → hostd → worker → plugin and back). hostd at `--log-level info`.",
    ]


def _footprint(data: dict[str, Any]) -> list[str]:
    base = data["baseline"]
    rows = [
        [
            "baseline: python -c 'import asyncio, socket, msgspec, orjson'",
            "",
            f"{base['ready_ms']:.1f} ({base['ready_ms_median']:.1f}-{base['ready_ms_max']:.1f})",
            "1.00x",
            f"{base['rss_bytes'] / MiB:.1f}",
            "",
            _n(base["cpu_ms"], 1),
            "1.00x",
        ]
    ]
    first_rows = []
    for loop, f in data["loops"].items():
        serve, run = f["serve"], f["run"]
        rows.append(
            [
                "hostd serve (socket accepting)",
                loop,
                f"{serve['ready_ms']:.1f} ({serve['ready_ms_median']:.1f}-{serve['ready_ms_max']:.1f})",
                _x(f["ratios"]["serve_ready_vs_baseline"]),
                f"{serve['rss_bytes'] / MiB:.1f}",
                f"{f['rss_over_baseline_bytes'] / MiB:+.1f}",
                _n(serve["cpu_ms"], 1),
                _x(f["ratios"]["serve_cpu_vs_baseline"]),
            ]
        )
        rows.append(
            [
                "hostd run -- trivial plugin (its first call answered)",
                loop,
                f"{run['first_answer_ms']:.1f} ({run['first_answer_ms_median']:.1f}-{run['first_answer_ms_max']:.1f})",
                _x(f["ratios"]["run_first_answer_vs_baseline"]),
                "",
                "",
                "",
                "",
            ]
        )
        for fam, c in f["first_call"].items():
            first_rows.append(
                [
                    fam,
                    loop,
                    _n(c["first_us"] / 1e3, 2),
                    _n(c["steady_us"] / 1e3, 3),
                    _n((c["first_us"] - c["steady_us"]) / 1e3, 2),
                ]
            )
    head = [
        "process",
        "loop",
        "ms to ready: best (median-worst)",
        "vs baseline",
        "idle RSS MiB",
        "RSS vs baseline MiB",
        "CPU ms (spawn to exit)",
        "CPU vs baseline",
    ]
    first_head = ["family", "loop", "first call ms", "next calls ms (median)", "first call adds ms"]
    return [
        "### Footprint: start-up, idle RSS and each family's first call (lazy imports)",
        "",
        *_table(head, rows),
        "",
        *_table(first_head, first_rows),
        "",
        f"Best of {data['repeats']} interleaved starts (median and worst in brackets). Ready: the baseline has "
        "imported its modules; `hostd serve` accepts on its Unix socket (polled every ms); `hostd run`: its plugin "
        "has the answer to its first `host.log`. Idle RSS 0.2 s after ready; CPU: user + system time from spawn to "
        "exit, stopped right after that (best run). First call: a fresh `hostd serve` per "
        "family, model and auth configured; the first call loads the family's modules.",
    ]


RENDER = {
    "calls": _calls,
    "peer": _peer,
    "relay": _relay,
    "model": _model,
    "scale": _scale,
    "latency": _latency,
    "native": _native,
    "footprint": _footprint,
}


def targets(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6 with the figure measured in this run."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, goal: str, met: bool, shown: str) -> None:
        out.append({"target": name, "value": value, "shown": shown, "goal": goal, "met": met})

    calls = sections.get("calls", {})
    for key, r in calls.get("ratios", {}).items():
        loop = key.split("/")[1]
        if key.endswith("log-written"):
            v = r["pipeline_vs_floor"]
            add(f"pipelined host.log, lines written, vs floor ({loop})", v, "≥ 0.45x", v >= 0.45, _x(v))
            continue
        v = r["serial_p50_vs_floor"]
        add(f"serial host.log p50 vs floor ({loop})", v, "≤ 1.5x", v <= 1.5, _x(v))
        v = r["pipeline_vs_floor"]
        add(f"pipelined host.log calls/s vs floor ({loop})", v, "≥ 0.5x", v >= 0.5, _x(v))
    peer = sections.get("peer", {})
    if "ratios" in peer:
        v = peer["ratios"]["python_client_concurrent_vs_mcp"]
        add("concurrent calls/s vs MCP SDK (each with its own client)", v, "≥ 20x", v >= 20, _x(v))
        v = peer["ratios"]["python_client_serial_vs_mcp"]
        add("serial calls/s vs MCP SDK (each with its own client)", v, "≥ 5x", v >= 5, _x(v))
    relay = sections.get("relay", {})
    for loop, f in relay.get("loops", {}).items():
        v = max(f["ratios"].values())
        add(f"stream relay vs direct httpx ({loop}, best depth)", v, "≥ 0.5x", v >= 0.5, _x(v))
        for depth, goal in ((relay.get("depth", 4), 0.7), (1, 0.4)):  # issue 16
            v = f["ratios"].get(f"hostd_depth{depth}_vs_direct")
            if v is not None:
                add(
                    f"stream relay, {depth} read(s) in flight, vs direct httpx ({loop})",
                    v,
                    f"≥ {goal}x",
                    v >= goal,
                    _x(v),
                )
    model = sections.get("model", {})
    if "ratios" in model:
        v = max(model["ratios"].values())
        add("model stream relay events/s vs direct httpx (best depth; no target set)", v, "(none)", True, _x(v))
    native = sections.get("native", {})
    for loop, f in native.get("loops", {}).items():
        v = f["ratios"]["host_log_p50_native_vs_ordinary"]
        add(f"native plugin host.log p50 vs ordinary plugin ({loop}; no target set)", v, "(none)", True, _x(v))
    footprint = sections.get("footprint", {})
    for loop, f in footprint.get("loops", {}).items():
        v = f["ratios"]["serve_ready_vs_baseline"]
        add(f"hostd serve ready vs bare-import baseline ({loop})", v, "≤ 1.5x", v <= 1.5, _x(v))
        v = f["rss_over_baseline_bytes"]
        add(f"hostd serve idle RSS over baseline ({loop})", v, "≤ +4 MiB", v <= 4 * MiB, f"{v / MiB:+.1f} MiB")
        v = f["ratios"]["run_first_answer_vs_baseline"]
        add(f"hostd run start to first answered call vs baseline ({loop})", v, "≤ 2x", v <= 2.0, _x(v))
    latency = sections.get("latency", {})
    for loop, f in latency.get("loops", {}).items():
        v = f["under_load"]["p99_ms"]
        goal = latency["goal_p99_ms"]
        name = f"victim hostd.hello p99 under the heaviest requests ({loop})"
        add(name, v, f"≤ {goal:.0f} ms", v <= goal, f"{v:.1f} ms")
    scale = sections.get("scale", {})
    if "rss_open_bytes" in scale:
        wanted = scale.get("streams_wanted", scale["streams"])
        if scale["streams"] < wanted:
            add(
                f"open {wanted:,} streams within the time budget",
                scale["streams"],
                f"{wanted:,}",
                False,
                f"{scale['streams']:,} in {scale['open_s']:.0f} s",
            )
        measured = scale["streams"] >= 10_000
        v = scale["rss_open_bytes"] if measured else scale["projected_rss_10k_bytes"]
        label = "RSS with 10,000 open streams" + ("" if measured else " (projected from a smaller run)")
        add(label, v, "< 256 MiB", v < 256 * MiB, f"{v / MiB:.1f} MiB")
        v = scale["rss_per_stream_bytes"]
        add("RSS per open HTTP stream (issue 16)", v, "≤ 12 KiB", v <= 12 * 1024, f"{v / 1024:.1f} KiB")
        v = scale["close_all_s"]
        add(f"all {scale['streams']:,} streams dropped after disconnect", v, "< 1 s", v < 1.0, f"{v * 1000:.0f} ms")
    return out


def _source(machine: dict[str, Any]) -> str:
    source = machine.get("hostd_source")
    return f" (hostd imported from {source})" if source and source != str(ROOT) else ""


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results["machine"]
    lines += [
        f"## Results ({results['settings']['name']} run, {results['started']})",
        "",
        f"Machine: {m['cpus']} x {m['cpu']}, {m['memory_bytes'] / 2**30:.1f} GiB RAM, Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}; load average at start {m['load_avg_at_start'][0]:.2f}; "
        f"hostd {m.get('hostd_commit') or '?'}{_source(m)}. "
        "Each figure is the best of the runs made (the machine is shared; noise only slows a run down).",
        "",
    ]
    for name, data in results["sections"].items():
        if "error" in data:
            lines += [f"### {name}", "", f"**{data['error']}**", ""]
            continue
        lines += [*RENDER[name](data), ""]
    rows = [[t["target"], t["shown"], t["goal"], "met" if t["met"] else "**missed**"] for t in results["targets"]]
    if rows:
        lines += ["### Targets (ratios from this run)", "", *_table(["target", "measured", "goal", ""], rows), ""]
    return "\n".join(lines)
