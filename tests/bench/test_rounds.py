"""Rounds of the benchmark: the order they run in, and each figure as the median of its rounds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def result(drained: float, done_p50: float, *, status: str = "ok", **extra: Any) -> dict[str, Any]:
    if status != "ok":
        return {"name": "x", "status": status, "seconds": 10.0, "figures": {}, "reason": "?"}
    return {
        "name": "x",
        "status": status,
        "seconds": 10.0,
        "figures": {
            "submit_one_per_s": drained / 10,
            "throughput_per_s": {"baseline": drained},
            "latency_completed_ms": {"p50": done_p50, "p99": done_p50 * 2, "samples": 200},
            **extra,
        },
    }


def test_rounds_go_forwards_then_backwards(run: ModuleType) -> None:
    assert run.round_order(["a", "b", "c"], 1) == [(1, "a"), (1, "b"), (1, "c")]
    assert run.round_order(["a", "b"], 3) == [
        (1, "a"), (1, "b"), (2, "b"), (2, "a"), (3, "a"), (3, "b"),
    ]  # fmt: skip


def test_figures_are_medians_of_the_rounds_that_finished(run: ModuleType) -> None:
    first = result(1000, 5.0, api_load={"stored_jobs": 10_000})
    runs = [first, result(3000, 2.0), result(0, 0, status="failed"), result(2000, 9.0)]
    combined = run.combined(runs)
    assert combined["status"] == "ok"
    figures = combined["figures"]
    assert figures["throughput_per_s"]["baseline"] == 2000
    assert figures["submit_one_per_s"] == 200
    assert figures["latency_completed_ms"] == {"p50": 5.0, "p99": 10.0, "samples": 200}
    assert figures["api_load"] == {"stored_jobs": 10_000}  # from the first round
    assert [r["status"] for r in combined["rounds"]] == ["ok", "ok", "failed", "ok"]
    assert [r["throughput_baseline"] for r in combined["rounds"]] == [1000, 3000, None, 2000]
    assert combined["seconds"] == 40.0
    assert first["figures"]["throughput_per_s"]["baseline"] == 1000  # the rounds are kept


def test_one_round_is_its_own_result(run: ModuleType) -> None:
    only = result(1000, 5.0)
    assert run.combined([only]) is only
    failed = [result(0, 0, status="failed"), result(0, 0, status="failed")]
    assert run.combined(failed)["status"] == "failed"


def test_extras_run_until_a_round_finishes(run: ModuleType) -> None:
    assert run.extras_due([])
    assert run.extras_due([result(0, 0, status="failed")])
    assert not run.extras_due([result(0, 0, status="failed"), result(1000, 5.0)])
    assert not run.extras_due([result(1000, 5.0)])
