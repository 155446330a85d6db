"""Dashboard benchmark: page load with a million logged predictions behind it, against a raw-log scan.

Set-up (timed and printed, not the figure): a champion trained by `churn pipeline run` in a fresh
CHURN_HOME; `--rows` back-dated predictions over `--days` days written to the prediction log by
`churn simulate` (with their labels and served-traffic counts); `churn monitor run` over them; and
one `churn batch score` of 20,000 generated customers, so that the at-risk panel has a run. With
`--home` the home is kept, and set-up is skipped when its log already holds `--rows` predictions.

Then, in one run:

- ours: `churn serve` (one worker) on that home; a session cookie from the link of
  `churn dashboard link --json`; with it, GET /dashboard?days=90 (the HTML page, its data inlined)
  and GET /dashboard/data?days=90 (the same data as JSON), 3 warm-ups then 30 timed requests each
  on one keep-alive connection: p50, p90, max. plotly.min.js once (browsers cache it: shown apart);
- reference: what a page would cost if it read the raw log: on the same SQLite database,
  `SELECT count(*), avg(latency_ms), max(at) FROM predictions` and every row's `probability` read
  into a list; 3 runs, the median.

`ratio = page p50 / raw scan median`. Target (the dashboard issue): page p90 under 1,000 ms.
The last line of stdout is one JSON object.

    uv run python bench/dashboard.py                          # 1,000,000 predictions
    uv run python bench/dashboard.py --rows 50000             # a quick run
    uv run python bench/dashboard.py --home /tmp/dash-home    # keep the home, reuse it next time
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from serving import REPO, _free_port, fail, say  # bench/serving.py

TARGET_MS = 1000.0
WARMUP = 3
REPEAT = 30
RAW_REPEAT = 3
BATCH_ROWS = 20_000
DAYS_SHOWN = 90
COOKIE = "churn_session"
READY_SECONDS = 120.0
UNLIMITED = {"CHURN_SERVING__RATE_PER_SECOND": "1000000", "CHURN_SERVING__BURST": "1000000"}


@dataclass(frozen=True)
class Timings:
    """One endpoint's timed requests, in ms, and the size of its answer."""

    ms: list[float]
    size: int

    def percentile(self, q: float) -> float:
        """The q-th percentile (nearest rank)."""
        ordered = sorted(self.ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# ---- set-up --------------------------------------------------------------------------------------


def churn(*args: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run `churn args --json`; its JSON and the seconds it took, or exit with its stderr."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "churn_mlops", *args, "--json"], env=env, capture_output=True, text=True
    )
    if done.returncode:
        fail(f"churn {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), time.perf_counter() - started


def logged_predictions(database: Path) -> int:
    """Rows in the prediction log; 0 when there is no log yet."""
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM predictions").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def prepare(home: Path, env: dict[str, str], rows: int, days: int) -> dict[str, float]:
    """Train, simulate, monitor and batch-score in `home`; the seconds of each step."""
    scratch = home / "bench-dashboard"
    scratch.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    _, seconds["train_s"] = churn("pipeline", "run", env=env)
    say(f"set-up: champion trained (churn pipeline run) in {seconds['train_s']:.1f} s")
    per_day = math.ceil(rows / days)
    done, seconds["simulate_s"] = churn("simulate", "--days", str(days), "--per-day", str(per_day), env=env)
    say(
        f"set-up: {done['predictions']:,} predictions over {days} days and {done['labels']:,} labels "
        f"(churn simulate --per-day {per_day}) in {seconds['simulate_s']:.1f} s"
    )
    _, seconds["monitor_s"] = churn("monitor", "run", env=env)
    say(f"set-up: churn monitor run in {seconds['monitor_s']:.1f} s")
    customers = scratch / "customers.csv"
    churn("data", "generate", "--rows", str(BATCH_ROWS), "--output", str(customers), "--force", env=env)
    output = str(scratch / "scores.parquet")
    _, seconds["batch_s"] = churn("batch", "score", "--input", str(customers), "--output", output, env=env)
    say(f"set-up: churn batch score of {BATCH_ROWS:,} customers in {seconds['batch_s']:.1f} s")
    return seconds


# ---- the server ----------------------------------------------------------------------------------


@contextmanager
def served(home: Path, env: dict[str, str]) -> Iterator[str]:
    """`churn serve` on a free port, answering /health/ready; killed on the way out, Ctrl-C included."""
    port = _free_port()
    command = [sys.executable, "-m", "churn_mlops", "serve", "--workers", "1", "--port", str(port)]
    log = home / "bench-dashboard" / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield url
    finally:
        _stop(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail(f"churn serve exited {process.returncode}; its log ends:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    fail(f"churn serve did not answer 200 on /health/ready in {READY_SECONDS:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def session_cookie(url: str, env: dict[str, str]) -> str:
    """A dashboard session: redeem the one-time link `churn dashboard link` prints."""
    port = url.rsplit(":", 1)[1]
    link, _ = churn("dashboard", "link", env={**env, "CHURN_SERVING__PORT": port})
    answer = httpx.get(link["url"], follow_redirects=False, timeout=30)
    cookie = answer.cookies.get(COOKIE)
    if answer.status_code != 303 or not cookie:
        fail(f"the sign-in link answered {answer.status_code} without a {COOKIE} cookie")
    return cookie


# ---- measuring -----------------------------------------------------------------------------------


def timed_gets(client: httpx.Client, path: str, repeat: int = REPEAT, warmup: int = WARMUP) -> Timings:
    """`warmup` untimed GETs, then `repeat` timed ones, each read in full; any non-200 stops."""
    times, size = [], 0
    for attempt in range(warmup + repeat):
        started = time.perf_counter()
        answer = client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            fail(f"GET {path} answered {answer.status_code}: {answer.text[:500]}")
        size = len(answer.content)
        if attempt >= warmup:
            times.append(elapsed)
    return Timings(times, size)


def shown_predictions(client: httpx.Client) -> int:
    """Online predictions the traffic panel counts: the page really has the log behind it."""
    traffic = client.get(f"/dashboard/data?days={DAYS_SHOWN}").json()["traffic"]
    return sum(traffic.get("online", []))


def raw_scan(database: Path) -> list[float]:
    """The reference: aggregate the raw log, then read every row's probability; ms per run."""
    times = []
    for _ in range(RAW_REPEAT):
        with sqlite3.connect(database) as connection:
            started = time.perf_counter()
            connection.execute("SELECT count(*), avg(latency_ms), max(at) FROM predictions").fetchone()
            probabilities = [row[0] for row in connection.execute("SELECT probability FROM predictions")]
            times.append((time.perf_counter() - started) * 1000)
        del probabilities
    return times


def measure(home: Path, env: dict[str, str]) -> dict[str, Any]:
    """Serve the home and time the page, its data and plotly.js."""
    with served(home, env) as url:
        cookie = session_cookie(url, env)
        with httpx.Client(base_url=url, cookies={COOKIE: cookie}, timeout=60) as client:
            page = timed_gets(client, f"/dashboard?days={DAYS_SHOWN}")
            data = timed_gets(client, f"/dashboard/data?days={DAYS_SHOWN}")
            plotly = timed_gets(client, "/dashboard/static/plotly.min.js", repeat=1, warmup=0)
            shown = shown_predictions(client)
    return {"page": page, "data": data, "plotly": plotly, "shown": shown}


# ---- report --------------------------------------------------------------------------------------


def summarise(
    predictions: int, measured: dict[str, Any], raw: list[float], setup: dict[str, float] | None
) -> dict[str, Any]:
    """The JSON result."""
    page, data, plotly = measured["page"], measured["data"], measured["plotly"]
    page_p50, page_p90 = page.percentile(50), page.percentile(90)
    raw_ms = statistics.median(raw)
    return {
        "predictions": predictions,
        "predictions_shown": measured["shown"],
        "days": DAYS_SHOWN,
        "page_p50_ms": round(page_p50, 2),
        "page_p90_ms": round(page_p90, 2),
        "page_max_ms": round(max(page.ms), 2),
        "page_bytes": page.size,
        "data_p50_ms": round(data.percentile(50), 2),
        "data_p90_ms": round(data.percentile(90), 2),
        "data_max_ms": round(max(data.ms), 2),
        "data_bytes": data.size,
        "plotly_ms": round(plotly.ms[0], 2),
        "plotly_bytes": plotly.size,
        "raw_scan_ms": round(raw_ms, 1),
        "raw_scan_runs_ms": [round(ms, 1) for ms in raw],
        "ratio": round(page_p50 / raw_ms, 4),
        "requests": REPEAT,
        "warmup": WARMUP,
        "target_ms": TARGET_MS,
        "passed": page_p90 < TARGET_MS,
        "setup_s": {name: round(s, 1) for name, s in setup.items()} if setup else None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report(result: dict[str, Any]) -> None:
    """The readable table and the verdict."""
    rows = f"{result['predictions']:>11,}"
    say(f"\n{REPEAT} requests each after {WARMUP} warm-ups, one keep-alive connection, one server worker")
    say(f"{'':52} {'predictions':>11} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8} {'bytes':>10}")
    for name, label in (
        ("page", f"GET /dashboard?days={DAYS_SHOWN} (HTML)"),
        ("data", f"GET /dashboard/data?days={DAYS_SHOWN} (JSON)"),
    ):
        say(
            f"{label:52} {rows} {result[name + '_p50_ms']:8.1f} {result[name + '_p90_ms']:8.1f} "
            f"{result[name + '_max_ms']:8.1f} {result[name + '_bytes']:>10,}"
        )
    say(
        f"{'GET plotly.min.js, once (cached by browsers)':52} {'':>11} {result['plotly_ms']:8.1f} "
        f"{'':>8} {'':>8} {result['plotly_bytes']:>10,}"
    )
    runs = ", ".join(f"{ms:.0f}" for ms in result["raw_scan_runs_ms"])
    say(
        f"{'reference: raw log scan (aggregates + probabilities)':52} {rows} "
        f"{result['raw_scan_ms']:8.1f}   (median of {RAW_REPEAT}: {runs})"
    )
    say(f"online predictions the traffic panel counts: {result['predictions_shown']:,}")
    say(f"ratio (page p50 / raw scan): {result['ratio']:.4f}")
    verdict = "PASS" if result["passed"] else "FAIL"
    say(f"page p90: {result['page_p90_ms']:.1f} ms   target < {TARGET_MS:g} ms   {verdict}")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions to log (default 1,000,000)")
    parser.add_argument("--days", type=int, default=90, help="days they span, ending today (default 90)")
    parser.add_argument("--home", type=Path, help="CHURN_HOME to keep, and reuse when it holds the rows")
    args = parser.parse_args()
    if args.rows < 1 or not 1 <= args.days <= 3650:
        parser.error("--rows must be at least 1 and --days between 1 and 3650")
    return args


def main() -> None:
    """Set up (or reuse) the home, measure, print the table and the JSON line."""
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill cleans up as Ctrl-C does
    home = (args.home or Path(tempfile.mkdtemp(prefix="bench-dashboard-")) / "churn-home").resolve()
    env = {**os.environ, **UNLIMITED, "CHURN_HOME": str(home)}
    database = home / "serving.db"
    try:
        setup = None
        if logged_predictions(database) >= args.rows:
            say(f"set-up: reusing {home} ({logged_predictions(database):,} predictions logged)")
            (home / "bench-dashboard").mkdir(exist_ok=True)
        else:
            setup = prepare(home, env, args.rows, args.days)
        predictions = logged_predictions(database)
        measured = measure(home, env)
        raw = raw_scan(database)
        result = summarise(predictions, measured, raw, setup)
        report(result)
        print(json.dumps(result))
    finally:
        if args.home is None:
            shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench/dashboard.py: interrupted (the server is stopped)")
