"""Serving A/B: variants of the churn server side by side, closed-loop peaks and open-loop latency.

What it measures
    bench/serving.py answers "how fast is the server"; this answers "is this change faster", on a
    shared machine whose speed drifts by tens of percent within minutes. Each variant is one
    `churn serve --workers 1` on CPU 0 with the settings of bench/serving.py (everything on), on a
    copy of the same trained home (so each has its own prediction log), with its own environment
    overrides and optionally its own source tree; `--bare` adds the bare FastAPI server of
    bench/serving.py as one more variant, to read the ratio from. The runs alternate between the
    variants, so a slow minute of the machine falls on all of them alike.
      - `--connections C --duration S` (S > 0): closed-loop `wrk` peaks, `--repeat` rounds.
      - `--rate R --open-duration S` (S > 0): open-loop runs at R req/s (R = 0: half the best
        peak of the first variant), `--repeat` rounds, with the generator of bench/serving.py;
        each run's p50/p99, its requests over 10 ms and the server's CPU per request, then per
        variant the medians of the runs in which the generator kept its schedule (late under 1 ms
        at p99).
      - `--by-id`: each variant's home has an online store holding every customer of the lake,
        and each request sends the next of them by id alone (bench/serving.py --by-id's load).
      - `--stall MS --stall-every S`: through the open-loop runs, a process pinned to the servers'
        CPU spins for MS ms every S s. On this shared machine a variant's p99 over a few runs
        is mostly the machine's stalls; with the same stalls forced on every variant, the runs
        compare how each recovers from one.

How to run
    git worktree add ../old HEAD~1   # or any commit: its src/ is a variant's source tree
    uv run python bench/serving_ab.py --variant old=../old/src@ --variant new \\
        --duration 0 --rate 1000 --repeat 6 --open-duration 10
    uv run python bench/serving_ab.py --variant now --bare   # with the bare reference server
    uv run python bench/serving_ab.py --variant old=../old/src@ --variant new \\
        --duration 0 --rate 1000 --open-duration 10 --stall 15 --stall-every 1
    A variant is NAME[=SRC@][ENV=VALUE,...]: SRC is a source tree put first on PYTHONPATH (a
    checkout of another commit), the rest are environment variables for that server only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import serving as bench  # bench/serving.py: the fixture, the servers and both load generators

Args = argparse.Namespace
Peaks = dict[str, list[float]]
SLOW_SECONDS = 0.010  # a request slower than this counts as slow in an open-loop run
# The stall: spin for `spin` seconds every `every` seconds, on a schedule (argv: every, spin).
STALL = """
import sys, time
every, spin = float(sys.argv[1]), float(sys.argv[2])
due = time.monotonic()
while True:
    due += every
    time.sleep(max(0.0, due - time.monotonic()))
    end = time.monotonic() + spin
    while time.monotonic() < end:
        pass
"""


@dataclass(frozen=True)
class Variant:
    """A server to compare: a name, a source tree or none, environment overrides."""

    name: str
    source: str | None
    env: dict[str, str]


def parse_variant(text: str) -> Variant:
    """NAME[=SRC@][ENV=VALUE,...]"""
    name, _, rest = text.partition("=")
    source, at, overrides = rest.partition("@")
    if not at:
        source, overrides = "", rest
    env = {}
    for pair in filter(None, overrides.split(",")):
        key, equals, value = pair.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"{text!r}: {pair!r} is not ENV=VALUE")
        env[key] = value
    return Variant(name, str(Path(source).resolve()) if source else None, env)


def start(variant: Variant, fixture: bench.Fixture, workdir: Path) -> bench.Server:
    """The variant's server on a copy of the trained home (its keys; a prediction log of its own)."""
    home = workdir / variant.name
    shutil.copytree(fixture.home, home)
    env = {
        **os.environ,
        "CHURN_HOME": str(home),
        "CHURN_SERVING__RATE_PER_SECOND": bench.UNTHROTTLED,
        "CHURN_SERVING__BURST": bench.UNTHROTTLED,
        **variant.env,
    }
    if variant.source:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [variant.source, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "churn_mlops", "serve", "--workers", "1"]
    return bench._launch(variant.name, command, env, workdir, replace(fixture, home=home))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (closed loop)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run; 0: none")
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop req/s; 0: half the peak")
    parser.add_argument("--open-duration", type=float, default=6.0, help="seconds per open-loop run; 0: none")
    parser.add_argument("--open-connections", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3000, help="synthetic customers to train on")
    parser.add_argument("--workdir", type=Path, help="keep the trained home here and reuse it")
    parser.add_argument("--bare", action="store_true", help="also run bench/serving.py's bare server")
    parser.add_argument(
        "--by-id", action="store_true", help="send customers by id alone (every variant's online store)"
    )
    parser.add_argument("--stall", type=float, default=0.0, help="ms of spinning on the server CPU; 0: none")
    parser.add_argument("--stall-every", type=float, default=1.0, help="seconds between those stalls")
    args = parser.parse_args()
    if args.open_duration and not args.rate and not args.duration:
        parser.error("--rate 0 takes half the peak: give --duration > 0, or a --rate")
    if args.stall < 0 or args.stall_every <= 0 or args.stall / 1000 >= args.stall_every:
        parser.error("--stall MS must be 0 or more and shorter than --stall-every S (> 0)")
    bench.check_machine()
    wrk = bench.ensure_wrk()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serving-ab-"))
    full = bench.prepare(root / "by-id" if args.by_id else root, args.rows)  # the bare server's body
    fixture = bench.prepare_by_id(root / "by-id", args.rows) if args.by_id else full
    servers_dir = Path(tempfile.mkdtemp(prefix="servers-", dir=root))
    servers = [start(variant, fixture, servers_dir) for variant in args.variant]
    if args.bare:
        bare = [sys.executable, str(bench.BARE)]
        servers.append(bench._launch("bare", bare, dict(os.environ), servers_dir, full))
    try:
        for server in servers:
            bench._wait_ready(server)
        os.sched_setaffinity(0, {bench.CLIENT_CPU})
        peaks = closed(wrk, servers, args)
        rate = args.rate or max(peaks[servers[0].name]) / 2
        if args.open_duration:
            with stalls(args.stall / 1000, args.stall_every):
                opened(servers, rate, args)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(servers_dir, ignore_errors=True)
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


def closed(wrk: str, servers: list[bench.Server], args: Args) -> Peaks:
    """Alternating wrk runs; req/s of each run by variant."""
    peaks: Peaks = {server.name: [] for server in servers}
    if not args.duration:
        return peaks
    for server in servers:
        bench.closed_loop(wrk, server, args.connections, 3)
    for repeat in range(1, args.repeat + 1):
        for server in servers:
            run = bench.closed_loop(wrk, server, args.connections, args.duration)
            peaks[server.name].append(run.rps)
            bench.say(
                f"closed -c{args.connections} {repeat}/{args.repeat} {server.name:12s} "
                f"{run.rps:8,.0f} req/s, "
                f"p99 {run.p99_ms:6.2f} ms, server CPU {run.cpu_us:5.0f} us/req"
            )
    return peaks


@contextmanager
def stalls(spin: float, every: float) -> Iterator[None]:
    """While inside, a process on the server CPU spins `spin` s every `every` s (none if spin is 0)."""
    if not spin:
        yield
        return
    command = ["taskset", "-c", str(bench.SERVER_CPU), sys.executable, "-c", STALL, str(every), str(spin)]
    process = subprocess.Popen(command)
    bench.say(f"stalls: a process spins {spin * 1000:.0f} ms on CPU {bench.SERVER_CPU} every {every:g} s")
    try:
        yield
    finally:
        process.kill()
        process.wait()


def opened(servers: list[bench.Server], rate: float, args: Args) -> None:
    """Alternating open-loop runs at `rate`; per variant, the medians of the runs that count."""
    kept: dict[str, list[tuple[float, float, int]]] = {server.name: [] for server in servers}
    for server in servers:
        bench.open_loop(server, rate, 1.0, args.open_connections)
    for repeat in range(1, args.repeat + 1):
        for server in servers:
            cpu = server.cpu_seconds()
            run = bench.open_loop(server, rate, args.open_duration, args.open_connections)
            cpu_us = (server.cpu_seconds() - cpu) / len(run.latencies) * 1e6
            p99 = bench.percentile(run.latencies, 99) * 1000
            late = bench.percentile(run.lateness, 99) * 1000
            slow = sum(latency > SLOW_SECONDS for latency in run.latencies)
            if late <= bench.LATE_LIMIT_MS:
                kept[server.name].append((p99, cpu_us, slow))
            bench.say(
                f"open {rate:,.0f} req/s {repeat}/{args.repeat} {server.name:12s} "
                f"p50 {bench.percentile(run.latencies, 50) * 1000:6.2f} ms, p99 {p99:7.2f} ms, "
                f"over {SLOW_SECONDS * 1000:.0f} ms {slow:5d}, server CPU {cpu_us:5.0f} us/req, "
                f"generator late p99 {late:.2f} ms"
            )
    for name, runs in kept.items():
        if runs:
            median_p99 = statistics.median(p for p, _, _ in runs)
            median_cpu = statistics.median(c for _, c, _ in runs)
            median_slow = statistics.median(n for _, _, n in runs)
            bench.say(
                f"{name:12s} median p99 {median_p99:7.2f} ms, "
                f"over {SLOW_SECONDS * 1000:.0f} ms {median_slow:7.1f}, "
                f"CPU {median_cpu:5.0f} us/req over {len(runs)} runs"
            )
        else:
            bench.say(f"{name:12s} no run in which the generator kept its schedule")


if __name__ == "__main__":
    main()
