"""Measure one system and write its figures as JSON: ``python bench/measure.py NAME --out F``.

``run.py`` runs this once per system in a subprocess of its own (own session, hard time limit),
so that a peer that hangs or crashes costs only its own row of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent / "apps")]

from common import Peer, PeerFailed, percentile, wait_done  # noqa: E402
from peers import load_peer  # noqa: E402

COMPLETED_POLL = 0.02  # seconds between two reads of the system's completed count
DONE_POLL = 0.001  # seconds between two reads of one job's state (latency)


def wait_completed(peer: Peer, target: int, timeout: float) -> float:
    """Poll ``peer.completed()`` until it reaches ``target``; return the monotonic time at which
    it was first seen there. Raise PeerFailed after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        now = time.monotonic()
        if peer.completed() >= target:
            return now
        if now > deadline:
            raise PeerFailed(f"only {peer.completed()}/{target} completed after {timeout:.0f}s")
        checks += 1
        if checks % 50 == 0:
            peer.check_workers()
        time.sleep(COMPLETED_POLL)


def time_limit(jobs: int) -> float:
    """Seconds allowed for one phase over ``jobs`` jobs (at least 25 jobs/s, at least 60 s)."""
    return max(60.0, jobs / 25)


def measure(peer: Peer, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Run every phase on ``peer``, filling ``result["figures"]`` as it goes."""
    figures: dict[str, Any] = result["figures"]
    jobs, workers = args.jobs, args.workers
    total = 0  # jobs submitted so far, all of which must complete before we count the next

    result["phase"] = "setup"
    peer.setup()

    result["phase"] = "single submission"
    limit = time.monotonic() + time_limit(jobs)
    start = time.perf_counter()
    for _ in range(jobs):
        peer.submit_one()
        if time.monotonic() > limit:
            raise PeerFailed(f"single submission of {jobs} jobs took over {time_limit(jobs):.0f}s")
    figures["submit_one_per_s"] = jobs / (time.perf_counter() - start)
    total += jobs

    result["phase"] = "throughput (baseline)"
    figures["throughput_per_s"] = {}
    peer.before_workers()
    start = time.monotonic()
    peer.start_workers(workers, "baseline")
    done_at = wait_completed(peer, total, time_limit(jobs) + 30)
    figures["throughput_per_s"]["baseline"] = jobs / (done_at - start)

    result["phase"] = "latency"
    time.sleep(0.5)  # let the workers go idle
    started: list[float] = []
    completed: list[float] = []
    samples = args.latency_samples
    for index in range(samples + args.latency_warmup):
        submitted = time.time()
        handle = peer.submit_and_wait()
        total += 1
        wait_done(peer, handle, DONE_POLL)
        seen = time.time()
        if index < args.latency_warmup:
            continue
        completed.append((seen - submitted) * 1000)
        began = peer.started_at(handle)
        if began is not None:
            started.append((began - submitted) * 1000)
    figures["latency_completed_ms"] = {
        "p50": percentile(completed, 50),
        "p99": percentile(completed, 99),
        "samples": len(completed),
    }
    if started:
        figures["latency_started_ms"] = {
            "p50": percentile(started, 50),
            "p99": percentile(started, 99),
            "samples": len(started),
        }
    peer.stop_workers()

    other_settings = [name for name in peer.settings if name != "baseline"]
    if peer.has_bulk or other_settings:
        result["phase"] = "bulk submission"
        limit = time.monotonic() + time_limit(jobs)
        start = time.perf_counter()
        left = jobs
        while left > 0:
            chunk = min(args.bulk_chunk, left)
            if peer.has_bulk:
                peer.submit_bulk(chunk)
            else:
                for _ in range(chunk):
                    peer.submit_one()
            left -= chunk
            if time.monotonic() > limit:
                raise PeerFailed(f"bulk submission took over {time_limit(jobs):.0f}s")
        if peer.has_bulk:
            figures["submit_bulk_per_s"] = jobs / (time.perf_counter() - start)
        total += jobs

    for setting in other_settings:
        result["phase"] = f"throughput ({setting})"
        peer.before_workers()
        start = time.monotonic()
        peer.start_workers(workers, setting)
        done_at = wait_completed(peer, total, time_limit(jobs) + 30)
        figures["throughput_per_s"][setting] = jobs / (done_at - start)
        peer.stop_workers()

    result["phase"] = "extra"
    figures.update(peer.extra_figures(args))
    result["phase"] = "done"


def main() -> int:
    """Parse arguments, measure one system, write the JSON, exit 0 (failures are in the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--latency-warmup", type=int, default=5)
    parser.add_argument("--bulk-chunk", type=int, default=1000)
    parser.add_argument("--api-load", action="store_true")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--scale-out", action="store_true")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = parser.parse_args()

    result: dict[str, Any] = {"name": args.name, "status": "ok", "figures": {}, "phase": "load"}
    work_dir = Path(tempfile.mkdtemp(prefix=f"bench-{args.name}-"))
    result["work_dir"] = str(work_dir)
    peer: Peer | None = None
    try:
        peer = load_peer(args.name, work_dir)
        result["settings"] = dict(peer.settings)
        result["store"] = peer.store
        measure(peer, args, result)
    except PeerFailed as error:
        result.update(status="failed", reason=f"{result['phase']}: {error}")
    except Exception as error:  # a peer's own exception: report it, keep the run going
        traceback.print_exc()
        line = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        result.update(status="failed", reason=f"{result['phase']}: {line}")
    finally:
        if peer is not None:
            try:
                peer.teardown()
            except Exception as error:
                result.setdefault("notes", []).append(f"teardown: {error}")
        args.out.write_text(json.dumps(result, indent=2))
    if not args.keep and result["status"] == "ok":
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
