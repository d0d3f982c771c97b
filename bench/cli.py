"""``python -m bench [--quick] [--only calls,peer,relay,model,scale,native,footprint] [--output PATH]``.

Runs the sections in order, prints the tables and the targets, and writes the results
(every figure, each run's settings, the machine) as JSON to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import calls, footprint, latency, model, native, peer, relay, report, scale
from bench.common import BENCH_DIR, BenchError, Settings, build_loadgen, machine_info, raise_nofile_limit

SECTIONS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "calls": calls.run,
    "peer": peer.run,
    "relay": relay.run,
    "model": model.run,
    "scale": scale.run,
    "latency": latency.run,
    "native": native.run,
    "footprint": footprint.run,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="hostd benchmarks (docs/performance.md)")
    parser.add_argument("--quick", action="store_true", help="small counts: a fast smoke run (about a minute)")
    parser.add_argument("--preset", choices=("full", "quick", "tiny"), help="counts preset (--quick = quick)")
    parser.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json", help="results JSON path")
    args = parser.parse_args(argv)
    args.preset = args.preset or ("quick" if args.quick else "full")
    names = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    args.sections = names
    return args


def run(settings: Settings, sections: Sequence[str], log: Callable[[str], None]) -> dict[str, Any]:
    raise_nofile_limit()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": dataclasses.asdict(settings),
        "machine": machine_info(),
        "sections": {},
        "durations_s": {},
    }
    build_loadgen()
    for name in sections:
        log(f"bench: {name} ...")
        started = time.monotonic()
        try:
            data = SECTIONS[name](settings)
        except BenchError as e:
            data = {"error": str(e)}
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            data = {"error": f"failed: {type(e).__name__}: {e}"}
        elapsed = time.monotonic() - started
        results["sections"][name] = data
        results["durations_s"][name] = round(elapsed, 1)
        log(f"bench: {name} done in {elapsed:.1f} s" + (f" ({data['error']})" if "error" in data else ""))
    results["targets"] = report.targets(results["sections"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.preset(args.preset)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        results = run(settings, args.sections, log)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(report.render(results))
    print(f"\nwritten: {args.output}")
    return 0
