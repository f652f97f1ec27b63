"""Smoke test of the benchmark harness: ``bench/run.py --quick`` with two peers, as a subprocess,
must finish and report real figures for those peers and for jobdeck."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ["huey-sqlite", "rq"]
FIGURES = ("submit_one_per_s", "throughput_per_s", "latency_completed_ms")


def assert_figures(name: str, result: dict[str, Any]) -> None:
    """One system finished and has positive figures for everything the harness measures."""
    assert result["status"] == "ok", f"{name} failed: {result.get('reason')}"
    figures = result["figures"]
    for key in FIGURES:
        assert key in figures, f"{name} has no {key}"
    assert figures["submit_one_per_s"] > 0
    assert figures["throughput_per_s"]["baseline"] > 0
    latency = figures["latency_completed_ms"]
    assert latency["samples"] == 20
    assert 0 < latency["p50"] <= latency["p99"]


@pytest.mark.timeout(300)
def test_quick_run_reports_figures(tmp_path: Path) -> None:
    """The smoke command of bench/README.md writes figures and ratios for the chosen peers."""
    missing = [m for m in ("huey", "rq", "redis", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{missing} not installed: pip install -r bench/requirements.txt")
    out = tmp_path / "results" / "bench.json"  # a folder the run makes
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--jobs", "200", "--quick"]
    command += ["--api-load"]
    command += ["--peers", ",".join(PEERS), "--json", str(out), "--timeout", "120"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    systems = report["systems"]
    assert report["config"]["jobs"] == 200
    for peer in PEERS:
        assert_figures(peer, systems[peer])
    assert systems["rq"]["figures"]["submit_bulk_per_s"] > 0
    assert "throughput" in systems["huey-sqlite"]["figures"]["throughput_per_s"]
    assert_figures("jobdeck-sqlite", systems["jobdeck-sqlite"])
    jobdeck = systems["jobdeck-sqlite"]["figures"]
    assert jobdeck["submit_bulk_per_s"] > 0
    assert jobdeck["cold_start_per_s"] > 0
    assert (
        0 < jobdeck["latency_two_requests_ms"]["p50"] <= jobdeck["latency_two_requests_ms"]["p99"]
    )
    load = jobdeck["api_load"]
    assert load["stored_jobs"] >= 10_000
    for clients in (1, 10, 50):
        for kind, requests in (("get_job", 2000), ("list_jobs", 500)):
            figures = load[f"{kind}_c{clients}_ms"]
            assert figures["requests"] == requests
            assert 0 < figures["p50"] <= figures["p99"]
    for peer in PEERS:
        ratio = report["ratios"][peer]
        assert ratio["versus"] == "jobdeck-sqlite"
        assert ratio["throughput_baseline"] > 0
        assert ratio["submit_one_per_s"] > 0
