"""Start-up: seconds from process start to ready, for `churn serve` and a bare FastAPI app.

Each server is started `--repeat` times, alternately, under the same uvicorn settings (one
worker), on a trained home made once (not timed; the same fixture as bench/serving.py). Ready
means: `churn serve` answers 200 on /health/ready (the champion loaded and verified, the
prediction log open), the bare app (bench/serving_bare.py) answers a POST /predict. The median of
each is reported; `ratio = ready_s / bare_ready_s`. Target (the lean-core issue): ready_s < 3
and ratio <= 3. The last line is one JSON object.

    uv run python bench/startup.py [--repeat 5] [--workdir /tmp/bench-startup]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import serving as bench  # bench/serving.py: the trained fixture and the bare server's path

READY_TIMEOUT = 120.0
TARGET_READY_S = 3.0
TARGET_RATIO = 3.0


def ready_seconds(command: list[str], env: dict[str, str], probe: urllib.request.Request) -> float:
    """Start a server, time it until `probe` answers 200, stop it; the seconds it took."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=bench.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        while time.perf_counter() - started < READY_TIMEOUT:
            if process.poll() is not None:
                bench.fail(
                    f"{command[2:4]} exited {process.returncode}: {process.stderr.read().decode()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(probe, timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.02)
        bench.fail(f"{command[2:4]} not ready in {READY_TIMEOUT:.0f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(fixture: bench.Fixture, repeat: int) -> dict[str, list[float]]:
    """Alternate the two servers `repeat` times each; every run's seconds to ready."""
    churn_env = {**os.environ, "CHURN_HOME": str(fixture.home)}
    runs: dict[str, list[float]] = {"churn": [], "bare": []}
    for attempt in range(1, repeat + 1):
        port = bench._free_port()
        command = [sys.executable, "-m", "churn_mlops", "serve", "--workers", "1", "--port", str(port)]
        health = urllib.request.Request(f"http://127.0.0.1:{port}/health/ready")
        runs["churn"].append(ready_seconds(command, churn_env, health))
        port = bench._free_port()
        predict = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            data=fixture.body,
            headers={"Content-Type": "application/json"},
        )
        runs["bare"].append(
            ready_seconds([sys.executable, str(bench.BARE), "--port", str(port)], dict(os.environ), predict)
        )
        bench.say(
            f"  run {attempt}/{repeat}: churn serve {runs['churn'][-1]:.2f} s, bare {runs['bare'][-1]:.2f} s"
        )
    return runs


def _runs(seconds: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="starts of each server (default 5)")
    parser.add_argument("--workdir", type=Path, help="keep and reuse the trained home here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-startup-"))
    fixture = bench.prepare(workdir, 3000)
    runs = measure(fixture, args.repeat)
    ready, bare = statistics.median(runs["churn"]), statistics.median(runs["bare"])
    ratio = ready / bare
    verdict = "PASS" if ready < TARGET_READY_S and ratio <= TARGET_RATIO else "FAIL"
    print(f"\nseconds from process start to ready, median of {args.repeat} (all runs in brackets)")
    print(f"churn serve (champion verified, log open) {ready:6.2f}  [{_runs(runs['churn'])}]")
    print(f"bare FastAPI under the same uvicorn        {bare:6.2f}  [{_runs(runs['bare'])}]")
    print(
        f"ready_s {ready:.2f} (target < {TARGET_READY_S:g}), ratio {ratio:.2f} (target <= {TARGET_RATIO:g})"
    )
    print(verdict)
    result = {
        "ready_s": round(ready, 3),
        "bare_ready_s": round(bare, 3),
        "ratio": round(ratio, 3),
        "ready_runs_s": [round(s, 3) for s in runs["churn"]],
        "bare_runs_s": [round(s, 3) for s in runs["bare"]],
        "target_ready_s": TARGET_READY_S,
        "target_ratio": TARGET_RATIO,
        "passed": verdict == "PASS",
        "python": sys.version.split()[0],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
