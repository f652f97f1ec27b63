"""Benchmark jobdeck against its peers on this machine, in one run: ``python bench/run.py``.

Each system is measured by ``bench/measure.py`` in a subprocess of its own (own session, hard
time limit), one after the other, with the same no-op job, the same N (``--jobs``) and the same
number of worker processes (``--workers``); with ``--rounds R``, R times, in turn forwards and
backwards through the systems, each figure the median of its rounds. Peers come from PyPI:
``pip install -r bench/requirements.txt``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR)]

from peers import JOBDECK, SYSTEMS  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

PEERS = [name for name in SYSTEMS if name not in JOBDECK]
PG_PEERS = {"procrastinate", "pgqueuer"}
# figure key -> (column title, higher is better)
COLUMNS: dict[str, tuple[str, bool]] = {
    "throughput_baseline": ("thr. baseline /s", True),
    "throughput_tuned": ("thr. tuned /s", True),
    "submit_one_per_s": ("submit 1-by-1 /s", True),
    "submit_bulk_per_s": ("submit bulk /s", True),
    "started_p50_ms": ("start p50 ms", False),
    "started_p99_ms": ("start p99 ms", False),
    "completed_p50_ms": ("done p50 ms", False),
    "completed_p99_ms": ("done p99 ms", False),
}
console = Console()
if console.width < 170:  # not a wide terminal (or not a terminal): do not squeeze the tables
    console = Console(width=170)


def flat_figures(result: dict[str, Any]) -> dict[str, float | None]:
    """The table's figures of one system, flattened (None where it has none)."""
    figures = result.get("figures", {})
    throughput = figures.get("throughput_per_s", {})
    tuned = [value for key, value in throughput.items() if key != "baseline"]
    started = figures.get("latency_started_ms", {})
    completed = figures.get("latency_completed_ms", {})
    return {
        "throughput_baseline": throughput.get("baseline"),
        "throughput_tuned": max(tuned) if tuned else None,
        "submit_one_per_s": figures.get("submit_one_per_s"),
        "submit_bulk_per_s": figures.get("submit_bulk_per_s"),
        "started_p50_ms": started.get("p50"),
        "started_p99_ms": started.get("p99"),
        "completed_p50_ms": completed.get("p50"),
        "completed_p99_ms": completed.get("p99"),
    }


def reference_for(peer: str, results: dict[str, dict[str, Any]]) -> str:
    """The jobdeck a peer is compared with: jobdeck-pg for PostgreSQL peers, else SQLite."""
    if results.get(peer, {}).get("store") == "pg" or peer in PG_PEERS:
        return "jobdeck-pg"
    return "jobdeck-sqlite"


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """jobdeck/peer for every figure both have. jobdeck has one setting: its throughput is set
    against the peer's baseline and against the peer's tuned setting."""
    out: dict[str, dict[str, Any]] = {}
    for peer, result in results.items():
        if peer in JOBDECK:
            continue
        ref = reference_for(peer, results)
        if ref not in results:
            continue
        ours, theirs = flat_figures(results[ref]), flat_figures(result)
        ours["throughput_tuned"] = ours["throughput_baseline"]
        row: dict[str, Any] = {"versus": ref}
        for key in COLUMNS:
            a, b = ours.get(key), theirs.get(key)
            row[key] = a / b if a is not None and b else None
        out[peer] = row
    return out


def extras_due(runs: list[dict[str, Any]]) -> bool:
    """Whether jobdeck's extras (``--api-load``, ``--million``, ``--scale-out``) run in a
    system's next round: until a round of it has finished (they are measured once, and a
    failed round's are lost)."""
    return not any(run["status"] == "ok" for run in runs)


def run_system(
    name: str, args: argparse.Namespace, out_dir: Path, *, round_: int = 1, extras: bool = True
) -> dict[str, Any]:
    """Measure one system in a subprocess; a failure or timeout becomes a failed result.
    jobdeck's extras run with ``extras`` (see :func:`extras_due`)."""
    out = out_dir / f"{name}-r{round_}.json"
    log = out_dir / f"{name}-r{round_}.log"
    command = [sys.executable, str(BENCH_DIR / "measure.py"), name, "--out", str(out)]
    command += ["--jobs", str(args.jobs), "--workers", str(args.workers)]
    command += ["--latency-samples", str(args.latency_samples)]
    command += ["--latency-warmup", "2" if args.quick else "5"]
    for flag in ("api_load", "million", "scale_out"):
        if getattr(args, flag) and name in JOBDECK and extras:
            command.append("--" + flag.replace("_", "-"))
    limit = args.timeout or (180 + args.jobs * 0.12 + (3600 if args.million else 0))
    started = time.monotonic()
    with log.open("wb") as output:
        proc = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        result: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError):
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        reason = f"no result after {time.monotonic() - started:.0f}s (limit {limit:.0f}s)"
        result = {"name": name, "status": "failed", "figures": {}, "reason": reason}
        if tail:
            result["reason"] += f": {tail[0][:200]}"
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def round_order(systems: list[str], rounds: int) -> list[tuple[int, str]]:
    """``(round, system)`` in the order they run: forwards, then backwards, and so on, so that
    a machine whose speed drifts during the run weighs on every system alike."""
    order = []
    for round_ in range(1, rounds + 1):
        names = systems if round_ % 2 else list(reversed(systems))
        order += [(round_, name) for name in names]
    return order


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's result from its rounds: each figure of the tables is the median over the
    rounds that finished; the rest (settings, jobdeck's extras) comes from the first of them,
    which is the one that measured the extras (:func:`extras_due`).
    Every round's figures are kept under ``rounds``."""
    finished = [run for run in runs if run["status"] == "ok"]
    if len(runs) == 1 or not finished:
        return runs[0]
    result: dict[str, Any] = json.loads(json.dumps(finished[0]))
    figures = result["figures"]
    for key in ("submit_one_per_s", "submit_bulk_per_s"):
        values = [run["figures"][key] for run in finished if key in run["figures"]]
        if values:
            figures[key] = statistics.median(values)
    for key in ("throughput_per_s", "latency_started_ms", "latency_completed_ms"):
        for part in figures.get(key, {}):
            if part == "samples":
                continue
            values = [
                run["figures"][key][part] for run in finished if part in run["figures"].get(key, {})
            ]
            figures[key][part] = statistics.median(values)
    result["rounds"] = [
        {"status": run["status"], "seconds": run.get("seconds"), **flat_figures(run)}
        for run in runs
    ]
    result["seconds"] = round(sum(run.get("seconds", 0.0) for run in runs), 1)
    return result


def fmt(value: float | None, ratio: bool = False) -> str:
    """A figure for the table."""
    if value is None:
        return "-"
    if ratio:
        return f"{value:.2f}x"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def print_tables(report: dict[str, Any]) -> None:
    """The Rich tables: figures, ratios, settings, jobdeck extras."""
    results: dict[str, dict[str, Any]] = report["systems"]
    config = report["config"]
    title = (
        f"{config['jobs']} no-op jobs, {config['workers']} worker processes, "
        f"{report['machine']['cores']} cores"
    )
    if config.get("rounds", 1) > 1:
        title += f"; the median of {config['rounds']} rounds"
    table = Table(title=title)
    table.add_column("system")
    for heading, _ in COLUMNS.values():
        table.add_column(heading, justify="right")
    failures = []
    for name, result in results.items():
        flat = flat_figures(result)
        cells = [fmt(flat[key]) for key in COLUMNS]
        label = name if result["status"] == "ok" else f"{name} [red](failed)[/]"
        table.add_row(label, *cells)
        if result["status"] != "ok":
            failures.append((name, result.get("reason", "")))
    console.print(table)
    for name, reason in failures:
        console.print(f"[red]{name} failed:[/] {reason}")

    ratio_table = Table(
        title="jobdeck / peer (above 1 is better for jobdeck in /s columns, below 1 in ms columns)"
    )
    ratio_table.add_column("peer")
    ratio_table.add_column("vs")
    for heading, _ in COLUMNS.values():
        ratio_table.add_column(heading, justify="right")
    for peer, row in report["ratios"].items():
        cells = [fmt(row[key], ratio=True) for key in COLUMNS]
        ratio_table.add_row(peer, row["versus"], *cells)
    console.print(ratio_table)

    if config.get("rounds", 1) > 1:
        spread = Table(title="each round (the tables above show their medians)")
        spread.add_column("system")
        shown = ("throughput_baseline", "throughput_tuned", "submit_bulk_per_s", "completed_p50_ms")
        for key in shown:
            spread.add_column(COLUMNS[key][0], justify="right")
        for name, result in results.items():
            rounds = result.get("rounds", [])
            spread.add_row(
                name, *(" / ".join(fmt(one.get(key)) for one in rounds) for key in shown)
            )
        console.print(spread)

    settings = Table(title="settings (W = --workers)")
    settings.add_column("system")
    settings.add_column("baseline")
    settings.add_column("tuned (documented throughput setting)")
    for name, result in results.items():
        known = result.get("settings", {})
        tuned = "; ".join(v for k, v in known.items() if k != "baseline") or "-"
        settings.add_row(name, known.get("baseline", "-"), tuned)
    console.print(settings)

    for name in JOBDECK:
        figures = results.get(name, {}).get("figures", {})
        extra = {
            key: figures[key]
            for key in (
                "latency_two_requests_ms",
                "cold_start_per_s",
                "worker_command_per_s",
                "rss_peak",
                "embedded",
                "scale_out_per_s",
                "api_load",
            )
            if key in figures
        }
        if extra:
            console.print(f"[bold]{name}[/] extras: {json.dumps(rounded(extra))}")


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to one decimal (for printing)."""
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def main() -> int:
    """Parse the options, measure each system in turn, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="N no-op jobs (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers (default all: {','.join(PEERS)})",
    )
    parser.add_argument("--quick", action="store_true", help="20 latency samples, not 200")
    parser.add_argument("--latency-samples", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write the figures as JSON to this file")
    parser.add_argument(
        "--api-load",
        action="store_true",
        help="jobdeck: GET job / list jobs p50/p99 at 1/10/50 clients, 10k jobs",
    )
    parser.add_argument(
        "--million",
        action="store_true",
        help="jobdeck: the API load with 1M stored jobs (implies --api-load)",
    )
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="jobdeck-pg: throughput with 1, 2, 4 `jobdeck worker` processes",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every system R times, forwards then backwards through the systems; "
        "the tables show each figure's median (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed per system (default 180 + 0.12 s per job)",
    )
    args = parser.parse_args()
    if args.latency_samples is None:
        args.latency_samples = 20 if args.quick else 200
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in SYSTEMS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    systems = ["jobdeck-sqlite"]
    if args.scale_out or set(peers) & PG_PEERS or args.peers == parser.get_default("peers"):
        systems.append("jobdeck-pg")
    systems += [p for p in peers if p not in JOBDECK]

    console.print(
        f"Peers are installed with: [bold]pip install -r {BENCH_DIR / 'requirements.txt'}[/]"
    )
    out_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    report: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "jobs": args.jobs,
            "workers": args.workers,
            "latency_samples": args.latency_samples,
            "rounds": args.rounds,
            "systems": systems,
        },
        "systems": {},
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for round_, name in round_order(systems, args.rounds):
        label = f"{name} (round {round_}/{args.rounds})" if args.rounds > 1 else name
        console.print(f"[bold]{label}[/] ...", end=" ")
        result = run_system(name, args, out_dir, round_=round_, extras=extras_due(runs[name]))
        runs[name].append(result)
        status = "ok" if result["status"] == "ok" else f"[red]failed[/]: {result.get('reason')}"
        console.print(f"{status} ({result['seconds']}s)")
    report["systems"] = {name: combined(runs[name]) for name in systems}
    report["ratios"] = ratios(report["systems"])
    print_tables(report)
    console.print(f"logs: {out_dir}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        console.print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
