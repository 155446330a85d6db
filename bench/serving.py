"""Serving benchmark: the churn server's /predict against a bare FastAPI endpoint, one core each side.

What it measures
    Set-up (not timed): installs `wrk` with apt-get when it is missing; trains a champion on
    `--rows` synthetic customers in a fresh CHURN_HOME (under `--workdir`, reused when it is
    there) and creates a predict-scope API key; the request body is one of those customers.

    Two servers run at once, each one uvicorn worker pinned to CPU 0 (`taskset -c 0`), both with
    uvloop/httptools and the access log of uvicorn off:
      - churn: `python -m churn_mlops serve --workers 1` on that home, everything on: API key auth,
        the rate limiter (rate and burst set to 1,000,000, so it runs on every request but never
        refuses), the prediction log (SQLite WAL, each answer waits for its commit), the JSON
        access log (to a file), Prometheus metrics.
      - bare: bench/serving_bare.py, one POST endpoint whose body is the same pydantic request
        model (built from the dataset spec the same way) and which returns a constant dict.
    The load comes from CPU 1 (this process and wrk are pinned there).

    1. Peak throughput, closed loop: after `--warmup` s on each, `wrk -t1 -c{--connections}
       -d{--duration}s --latency -s bench/predict.lua`, alternately churn, bare, `--repeat` times.
       The best run of each gives req/s; ratio = churn req/s / bare req/s. The server's CPU time
       per request (utime + stime of its process, all threads, read once the server has gone
       idle after the run, so that work it queued is charged to that run and not left to slow
       the next server's) is listed too: on a shared machine it moves less than req/s does.
    2. Latency at half the churn peak, open loop: an asyncio generator (uvloop, protocols, no task
       per request, so that it keeps its schedule at several thousand req/s; it sleeps until 2 ms
       before a request is due and then polls, as the loop's timers tick in whole milliseconds)
       in this process sends requests on a fixed schedule, rate = best churn req/s / 2, over up to
       `--open-connections` keep-alive connections, alternately to churn and bare, `--repeat`
       times `--open-duration` s each. A request's latency runs from its scheduled send time to
       the end of its response, so a server that falls behind is charged for the queueing
       (no coordinated omission). p50 and p99 pool the requests of every repeat (a stall of the
       server in one run counts); each run's own p99 is listed too. On a shared machine another
       tenant can stall either side: the bare server's p99 at the same rate and the generator's
       own lateness (scheduled send to the moment it sends) show when that happened. A run in
       which the generator itself was more than 1 ms late at p99 measured the machine, not the
       server: it is listed, left out and run again (twice at most; the last try counts, however
       late). Each run also lists the server's CPU time per request and how busy that keeps its
       core at this rate (one request at a time costs more than the closed loop's crowd, so half
       the closed-loop peak keeps a core far more than half busy), and the steal time of the
       server's CPU (/proc/stat): time the VM's host gave that core to another guest, which
       stalls whichever server is running there.
    Any non-2xx answer or socket error stops the benchmark: the figures would not mean anything.

    With `--shadow`, a third server runs beside them: `churn serve` (set up like the churn one)
    on a second trained home, in which a logistic-regression version is registered (the gate
    refuses to promote it) and shadows the champion (`churn rollout start --mode shadow`). The
    champion answers every request; the server hands each answered request to its shadow thread,
    which scores it with that version and stores the score (`shadow_predictions`). Set-up waits
    until the shadow stores scores, then both phases alternate churn, shadow, bare.

    With `--by-id`, a server for customers sent by id runs beside them: `churn serve` (set up like
    the churn one) on a second trained home whose SQLite online store holds every customer of the
    lake (`churn features materialize`'s job), sent `{"customer_id": ...}` alone, each request the
    next of all those customers in a shuffled order, so each request reads that customer's features
    from the online store before scoring. Its open-loop runs are at half its own peak.

Output
    Progress lines, a table, and as the last line of stdout one JSON object (predict_rps,
    bare_rps, ratio, p50_ms, p99_ms at half peak, rate, durations, targets, passed, ...).
    Targets: ratio >= 0.6 and p99 < 10 ms at half the peak rate. With `--shadow`, also
    shadow_ratio (shadow req/s / bare req/s), shadow_p99_ms, the shadow scores stored during the
    run (at peak, where the shadow only gets the CPU the answers leave, and at half the peak), and
    shadow_passed: shadow_ratio >= 0.9 x ratio (the shadow costs the answers no more than 10% of
    their throughput), the shadow server's p99 < 10 ms, and at half the peak the shadow scores at
    least 99% of the answers. With `--by-id`, also
    by_id_ratio (by-id req/s / bare req/s), by_id_p99_ms at half the by-id peak, and by_id_passed:
    by_id_ratio >= 0.5 x ratio and by_id_p99_ms < 10 ms.

How to run
    uv run python bench/serving.py [--duration S] [--repeat K] [--connections C]
                                   [--open-duration S] [--workdir DIR] [--rows N] [--shadow] [--by-id]

    Defaults take two to five minutes. Needs Linux, 2+ CPUs, taskset, and root for apt-get.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn, cast

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LUA = BENCH / "predict.lua"
BARE = BENCH / "serving_bare.py"
SERVER_CPU, CLIENT_CPU = 0, 1
RATIO_TARGET = 0.6
P99_TARGET_MS = 10.0
LATE_LIMIT_MS = 1.0  # an open-loop run whose generator is later than this at p99 is run again,
LATE_RETRIES = 2  # at most this many times; the last try counts whatever it shows
SPIN_SECONDS = 0.002  # the open-loop generator polls, not sleeps, this close to a request's time
UNTHROTTLED = "1000000"  # rate limit and burst: the limiter runs on every request, never refuses
READY_SECONDS = 300.0
SHADOW_SHARE = 0.9  # with a shadow running, the ratio must keep at least this share of its value
SHADOW_COVERAGE = 0.99  # at half the peak the shadow keeps up: it scores this share of the answers
BY_ID_SHARE = 0.5  # sent by id, the ratio must keep at least this share of the full body's
SHADOW_READY_SECONDS = 60.0  # servers poll the rollouts every 2 s, then load the shadow model
SETTLE_SECONDS = 60.0  # after a run, wait at most this long for the server to go idle
LABELS = {
    "churn": "churn /predict (auth, limit, log)",
    "shadow": "churn /predict + shadow model",
    "byid": "churn /predict by customer id",
    "bare": "bare FastAPI + pydantic",
}


@dataclass(frozen=True)
class Fixture:
    """A CHURN_HOME with a champion, a predict key and its request bodies (one JSON per line)."""

    home: Path
    api_key: str
    body_file: Path

    @property
    def bodies(self) -> list[bytes]:
        """The JSON request bodies, sent in turn."""
        return [line for line in self.body_file.read_bytes().splitlines() if line.strip()]

    @property
    def body(self) -> bytes:
        """The first request body: the one the set-up checks."""
        return self.bodies[0]


@dataclass
class Server:
    """A uvicorn server pinned to the server CPU, and the home whose key and body it is sent."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    fixture: Fixture

    @property
    def url(self) -> str:
        """The /predict URL."""
        return f"http://127.0.0.1:{self.port}/predict"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, all threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class ClosedRun:
    """One wrk run: throughput, latency and the server's CPU per request."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    cpu_us: float


@dataclass(frozen=True)
class OpenRun:
    """One open-loop run at a fixed rate: latencies from the scheduled send times, in seconds."""

    latencies: list[float]
    lateness: list[float]
    seconds: float
    stolen_ms: float  # time the hypervisor ran something else on the server's CPU during the run
    cpu_us: float  # the server's CPU time per request (all its threads)
    discarded: bool = False  # the generator itself fell behind: the run measured the machine


def say(text: str) -> None:
    """A progress line on stdout, flushed at once."""
    print(text, flush=True)


def fail(text: str) -> NoReturn:
    """Stop with a clear message on stderr."""
    sys.exit(f"bench/serving.py: {text}")


# ---- set-up ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The wrk binary, installed with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    say("set-up: wrk is not installed; installing it with `apt-get install -y wrk`")
    if not _apt("install", "-y", "wrk"):
        say("set-up: that failed; running `apt-get update` and trying again")
        _apt("update")
        _apt("install", "-y", "wrk")
    found = shutil.which("wrk")
    if not found:
        fail("wrk is missing and `apt-get install -y wrk` failed (needs root and a Debian mirror)")
    say(f"set-up: installed {found}")
    return str(found)


def _apt(*args: str) -> bool:
    try:
        done = subprocess.run(["apt-get", *args], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    return done.returncode == 0


def check_machine() -> None:
    """Two pinnable CPUs and taskset, or a clear message."""
    if not hasattr(os, "sched_getaffinity") or not shutil.which("taskset"):
        fail("needs Linux with taskset (util-linux)")
    if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        fail(f"needs CPUs {SERVER_CPU} and {CLIENT_CPU} (server and load generator on one core each)")


def prepare(root: Path, rows: int, *, shadow: bool = False) -> Fixture:
    """A trained CHURN_HOME with a key and a body under root, made once and then reused.

    With `shadow`, the home also has a second version shadowing the champion."""
    saved = root / "fixture.json"
    if saved.exists():
        fields = json.loads(saved.read_text())
        say(f"set-up: reusing the trained home in {root}")
        return Fixture(Path(fields["home"]), fields["api_key"], Path(fields["body_file"]))
    started = time.perf_counter()
    fixture = _train(root, rows)
    what = "a champion"
    if shadow:
        what += f" and a shadow (v{_start_shadow(fixture.home)}, logistic regression)"
    fields = {"home": str(fixture.home), "api_key": fixture.api_key, "body_file": str(fixture.body_file)}
    saved.write_text(json.dumps(fields))
    seconds = time.perf_counter() - started
    say(f"set-up: trained {what} on {rows:,} synthetic customers in {seconds:.1f} s (not timed)")
    return fixture


def _train(root: Path, rows: int) -> Fixture:
    from churn_mlops.data.ingest import ingest
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.sinks import write_frames
    from churn_mlops.data.sources import Source
    from churn_mlops.data.spec import load_spec
    from churn_mlops.data.synthetic import generate
    from churn_mlops.pipeline.training import train_and_register
    from churn_mlops.serving.keys import KeyStore
    from churn_mlops.settings import Settings

    root.mkdir(parents=True, exist_ok=True)
    settings, spec = Settings(home=root / "churn-home"), load_spec()
    csv = root / "customers.csv"
    write_frames(generate(rows, seed=7), Source(str(csv)), overwrite=True)
    lake = Lake(settings.lake_dir)
    result = ingest(Source(str(csv)), spec, lake=lake, quarantine_dir=settings.quarantine_dir)
    if result.version is None:
        fail("set-up: the synthetic customers did not ingest")
    frame = lake.read(result.version)
    train_and_register(frame, result.version, spec, settings)
    api_key, _ = KeyStore(settings.serving_database_url).create("bench", ["predict"])
    customer = frame.drop(spec.target.name).drop_nulls().row(0, named=True)
    body_file = root / "body.json"
    body_file.write_text(json.dumps(customer))
    return Fixture(settings.home, api_key, body_file)


def prepare_by_id(root: Path, rows: int) -> Fixture:
    """A trained home whose online store holds every customer, and a body sending one by id alone."""
    fixture = prepare(root, rows)
    body_file = root / "body-by-id.json"
    if not body_file.exists():
        started = time.perf_counter()
        ids = _fill_online_store(fixture.home)
        body_file.write_text("".join(json.dumps({"customer_id": found}) + "\n" for found in ids))
        say(f"set-up: Feast wrote the online store in {time.perf_counter() - started:.1f} s (not timed)")
    return replace(fixture, body_file=body_file)


def _fill_online_store(home: Path) -> list[str]:
    """Materialize the lake's customers into the SQLite online store under home, as
    `churn features materialize` does; their ids in a shuffled order, the first the customer
    the full body sends."""
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.spec import load_spec
    from churn_mlops.featurestore.materialize import materialize
    from churn_mlops.settings import Settings

    settings, spec = Settings(home=home), load_spec()
    lake = Lake(settings.lake_dir)
    version = lake.versions()[-1]
    materialize(settings, spec, version)
    frame = lake.read(version).select(spec.id.name, *(c.name for c in spec.features))
    first = str(frame.drop_nulls().get_column(spec.id.name)[0])  # the customer the full body sends
    others = [str(found) for found in frame.get_column(spec.id.name) if found != first]
    random.Random(0).shuffle(others)
    return [first, *others]


def _start_shadow(home: Path) -> str:
    """Register a logistic-regression version the gate refuses, and shadow the champion with it."""
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.spec import load_spec
    from churn_mlops.pipeline.rollout import start_rollout
    from churn_mlops.pipeline.training import train_and_register
    from churn_mlops.settings import RegistrySettings, Settings, TrainingSettings

    settings = Settings(
        home=home,
        training=TrainingSettings(candidates=["logistic_regression"]),
        registry=RegistrySettings(min_improvement=1.0),  # no ROC AUC gain is that large: never promoted
    )
    lake = Lake(settings.lake_dir)
    latest = lake.versions()[-1]
    outcome = train_and_register(lake.read(latest), latest, load_spec(), settings)
    if outcome.decision.promote:
        fail(f"set-up: the gate promoted the shadow's version ({outcome.decision.reason})")
    start_rollout(settings, mode="shadow", model=outcome.version.version, actor="bench")
    return outcome.version.version


# ---- servers -----------------------------------------------------------------------------------


def start_servers(
    fixture: Fixture, workdir: Path, shadow: Fixture | None = None, by_id: Fixture | None = None
) -> tuple[Server, ...]:
    """The churn server (and the shadowing one, the by-id one) and the bare one, pinned to the server
    CPU and answering."""
    churn = _launch("churn", _churn_command(), _churn_env(fixture), workdir, fixture)
    servers = [churn]
    if shadow is not None:
        servers.append(_launch("shadow", _churn_command(), _churn_env(shadow), workdir, shadow))
    if by_id is not None:
        servers.append(_launch("byid", _churn_command(), _churn_env(by_id), workdir, by_id))
    servers.append(_launch("bare", [sys.executable, str(BARE)], dict(os.environ), workdir, fixture))
    try:
        for server in servers:
            answer = _wait_ready(server)
            where = f"pid {server.process.pid}, port {server.port}"
            say(f"set-up: {server.name} server ({where}) answers {answer}")
        if shadow is not None:
            _wait_shadowing(servers[1])
    except BaseException:  # SystemExit from fail() included: leave no server behind
        for server in servers:
            server.stop()
        raise
    return tuple(servers)


def _churn_command() -> list[str]:
    return [sys.executable, "-m", "churn_mlops", "serve", "--workers", "1"]


def _churn_env(fixture: Fixture) -> dict[str, str]:
    return {
        **os.environ,
        "CHURN_HOME": str(fixture.home),
        "CHURN_SERVING__RATE_PER_SECOND": UNTHROTTLED,
        "CHURN_SERVING__BURST": UNTHROTTLED,
    }


def _launch(name: str, command: list[str], env: dict[str, str], workdir: Path, fixture: Fixture) -> Server:
    port = _free_port()
    log = workdir / f"{name}-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CPU), *command, "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(name, process, port, log, fixture)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(server: Server) -> str:
    """Post the body until the server answers 200; its answer, or exit with the log's tail."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            return _post(server)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    tail = server.log.read_text(errors="replace")[-2000:]
    fail(f"the {server.name} server did not answer 200 on {server.url}; its log ends:\n{tail}")


def _post(server: Server) -> str:
    request = urllib.request.Request(
        server.url,
        data=server.fixture.body,
        headers={"Content-Type": "application/json", "X-API-Key": server.fixture.api_key},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def _wait_shadowing(server: Server) -> None:
    """Post requests until the server's shadow stores scores: it has followed the rollout."""
    before, started = shadow_rows(server.fixture), time.monotonic()
    while time.monotonic() < started + SHADOW_READY_SECONDS:
        _post(server)
        if shadow_rows(server.fixture) > before:
            say(f"set-up: the shadow server stores shadow scores after {time.monotonic() - started:.1f} s")
            return
        time.sleep(0.25)
    tail = server.log.read_text(errors="replace")[-2000:]
    fail(f"the shadow server stored no shadow scores in {SHADOW_READY_SECONDS:g} s; its log ends:\n{tail}")


# ---- closed loop (wrk) -------------------------------------------------------------------------


def closed_loop(wrk: str, server: Server, connections: int, seconds: float) -> ClosedRun:
    """One wrk run from the client CPU against a server."""
    fixture = server.fixture
    env = {**os.environ, "WRK_BODY_FILE": str(fixture.body_file), "WRK_API_KEY": fixture.api_key}
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(LUA), server.url]
    cpu = server.cpu_seconds()
    done = subprocess.run(
        ["taskset", "-c", str(CLIENT_CPU), *command], env=env, capture_output=True, text=True, check=False
    )
    cpu = settled_cpu_seconds(server) - cpu
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if done.returncode != 0 or not lines:
        fail(f"wrk failed against {server.name}:\n{done.stdout}{done.stderr}")
    result = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    if result["non_2xx"] or result["socket_errors"] or not result["requests"]:
        fail(f"{server.name}: wrk saw {result} (non-2xx answers or socket errors); see {server.log}")
    return ClosedRun(
        rps=result["requests"] / (result["duration_us"] / 1e6),
        requests=result["requests"],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        cpu_us=cpu / result["requests"] * 1e6,
    )


# ---- open loop (asyncio) -----------------------------------------------------------------------


def open_loop(server: Server, rate: float, seconds: float, connections: int) -> OpenRun:
    """Send at a fixed rate for `seconds`; latency of each request from its scheduled time."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    requests = _raw_requests(server.port, server.fixture)
    started, stolen, cpu = time.perf_counter(), stolen_ms(SERVER_CPU), server.cpu_seconds()
    try:
        latencies, lateness = runner(_send_at_rate(server.port, requests, rate, seconds, connections))
    except (OSError, asyncio.IncompleteReadError) as exc:
        fail(f"{server.name}: the open-loop connection failed ({exc!r}); see {server.log}")
    if len(latencies) != int(rate * seconds):
        fail(f"{server.name}: {int(rate * seconds) - len(latencies)} open-loop requests failed")
    seconds, stolen = time.perf_counter() - started, stolen_ms(SERVER_CPU) - stolen
    cpu_us = (settled_cpu_seconds(server) - cpu) / len(latencies) * 1e6
    return OpenRun(latencies, lateness, seconds, stolen, cpu_us)


def settled_cpu_seconds(server: Server) -> float:
    """The server's CPU time once it has gone idle: work it queued during a run (a shadow's
    scoring) is charged to that run, and does not slow the next server's run on the same core."""
    cpu, deadline = server.cpu_seconds(), time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = server.cpu_seconds()
        if now - cpu < 0.005:  # no clock tick in 100 ms
            return now
        cpu = now
    return cpu


def stolen_ms(cpu: int) -> float:
    """Steal time of `cpu` so far (/proc/stat), in ms: on a VM, time its host ran another guest.

    The kernel counts it in clock ticks (10 ms), so a run's figure is good to about 10 ms; what it
    shows is whether the server's core was taken away during a run, which no server can hide."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    return 0.0


def _raw_requests(port: int, fixture: Fixture) -> list[bytes]:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {fixture.api_key}\r\nContent-Length: "
    )
    return [f"{head}{len(body)}\r\n\r\n".encode() + body for body in fixture.bodies]


class _OpenLoop:
    """The open-loop generator's state: idle connections, requests waiting for one, the results.

    Built on asyncio protocols, with no task per request, so that the generator's own cost stays
    far below the server's: a generator that falls behind its schedule would be measured as the
    server's latency.
    """

    def __init__(self, requests: list[bytes], count: int, done: asyncio.Future[None]) -> None:
        self.requests = itertools.cycle(requests)  # sent in turn
        self.count = count
        self.done = done
        self.idle: deque[_Connection] = deque()  # first in, first out: every connection stays warm
        self.backlog: deque[float] = deque()  # due times of requests waiting for a connection
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.answers = 0

    def dispatch(self, due: float) -> None:
        """A request is due: send it on an idle connection, or queue it for the next one free.

        Lateness is the generator's own: how long after its time the request is taken up, not
        how long it then waits for a connection (that is the server's, and in its latency)."""
        self.lateness.append(time.perf_counter() - due)
        if self.idle:
            self.idle.popleft().send(next(self.requests), due)
        else:
            self.backlog.append(due)

    def answered(self, connection: _Connection, due: float, ok: bool) -> None:
        if ok:  # a non-2xx answer is left out, and the count check then fails the run
            self.latencies.append(time.perf_counter() - due)
        self.answers += 1
        if self.backlog:
            connection.send(next(self.requests), self.backlog.popleft())
        else:
            self.idle.append(connection)
        if self.answers == self.count and not self.done.done():
            self.done.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed a keep-alive connection"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, run: _OpenLoop) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        size = end + 4 + _content_length(bytes(self.buffer[: end + 4]))
        if len(self.buffer) < size:
            return
        ok = self.buffer.startswith(b"HTTP/1.1 2")
        del self.buffer[:size]
        self.run.answered(self, self.due, ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(exc)


async def _send_at_rate(
    port: int, requests: list[bytes], rate: float, seconds: float, connections: int
) -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    run = _OpenLoop(requests, count, loop.create_future())
    opened = [
        await loop.create_connection(lambda: _Connection(run), "127.0.0.1", port) for _ in range(connections)
    ]
    run.idle.extend(connection for _, connection in opened)
    start = time.perf_counter() + 0.01
    sent = 0
    while sent < count:  # send every request that is due, then wait for the next one
        now = time.perf_counter()
        while sent < count and start + sent / rate <= now:
            run.dispatch(start + sent / rate)
            sent += 1
        if sent < count:
            # The loop's timers tick in whole milliseconds: sleep until SPIN_SECONDS before the
            # next request is due, then poll (sleep(0): one turn of the loop, answers read).
            wait = start + sent / rate - time.perf_counter()
            await asyncio.sleep(wait - SPIN_SECONDS if wait > SPIN_SECONDS else 0)
    await run.done
    for transport, _ in opened:
        transport.close()
    return run.latencies, run.lateness


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"no Content-Length in {head[:200]!r}")


# ---- the run -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def measure_peak(
    wrk: str, servers: tuple[Server, ...], args: argparse.Namespace
) -> dict[str, list[ClosedRun]]:
    """Warm up, then alternate wrk runs on the servers."""
    for server in servers:
        closed_loop(wrk, server, args.connections, args.warmup)
    runs: dict[str, list[ClosedRun]] = {server.name: [] for server in servers}
    width = max(len(server.name) for server in servers)
    for repeat in range(1, args.repeat + 1):
        for server in servers:
            run = closed_loop(wrk, server, args.connections, args.duration)
            runs[server.name].append(run)
            say(
                f"  closed loop {repeat}/{args.repeat} {server.name:{width}s}: {run.rps:8,.0f} req/s, "
                f"p50 {run.p50_ms:6.2f} ms, p99 {run.p99_ms:7.2f} ms, server CPU {run.cpu_us:6.0f} us/req"
            )
    return runs


def measure_latency(
    servers: tuple[Server, ...], rates: dict[str, float], args: argparse.Namespace
) -> dict[str, list[OpenRun]]:
    """Alternate open-loop runs on the servers, each at its rate, after a short warm-up each."""
    for server in servers:
        open_loop(server, rates[server.name], 1.0, args.open_connections)
    runs: dict[str, list[OpenRun]] = {server.name: [] for server in servers}
    width = max(len(server.name) for server in servers)
    for repeat in range(1, args.repeat + 1):
        for server in servers:
            rate = rates[server.name]
            for attempt in range(1, LATE_RETRIES + 2):
                run = open_loop(server, rate, args.open_duration, args.open_connections)
                late = percentile(run.lateness, 99) * 1000
                say(
                    f"  open loop {repeat}/{args.repeat} {server.name:{width}s} at {rate:,.0f} req/s: "
                    f"p50 {percentile(run.latencies, 50) * 1000:6.2f} ms, "
                    f"p99 {percentile(run.latencies, 99) * 1000:6.2f} ms, "
                    f"max {max(run.latencies) * 1000:7.2f} ms, generator late p99 {late:.2f} ms, "
                    f"server CPU {run.cpu_us:.0f} us/req ({run.cpu_us * rate / 1e4:.0f}% of its core), "
                    f"CPU {SERVER_CPU} stolen {run.stolen_ms:.0f} ms"
                )
                if late <= LATE_LIMIT_MS or attempt > LATE_RETRIES:
                    break
                runs[server.name].append(replace(run, discarded=True))
                say(f"    left out: the generator was over {LATE_LIMIT_MS:g} ms behind its schedule; again")
            runs[server.name].append(run)
    return runs


def prediction_log_rows(fixture: Fixture) -> int:
    """How many predictions the churn server logged."""
    import sqlite3

    with sqlite3.connect(fixture.home / "serving.db") as connection:
        return int(connection.execute("SELECT count(*) FROM predictions").fetchone()[0])


def settled_shadow_counts(fixture: Fixture) -> tuple[int, int]:
    """(shadow scores, answers) of the shadow server once its shadow has caught up: the count of
    shadow scores unchanged for a second (at most SHADOW_READY_SECONDS)."""
    deadline = time.monotonic() + SHADOW_READY_SECONDS
    last = -1
    while (rows := shadow_rows(fixture)) != last and time.monotonic() < deadline:
        last = rows
        time.sleep(1.0)
    return rows, prediction_log_rows(fixture)


def _shadow_coverage(counts: list[tuple[int, int]]) -> dict[str, Any]:
    """Shadow scores stored over answers given: the whole run, the peak phase, the half-peak phase."""
    (rows0, answers0), (rows1, answers1), (rows2, answers2) = counts
    return {
        "shadow_rows": rows2 - rows0,
        "shadow_answers": answers2 - answers0,
        "shadow_coverage_peak": round((rows1 - rows0) / max(answers1 - answers0, 1), 3),
        "shadow_coverage_half_peak": round((rows2 - rows1) / max(answers2 - answers1, 1), 3),
    }


def shadow_rows(fixture: Fixture) -> int:
    """How many shadow scores the home's servers stored."""
    import sqlite3

    with sqlite3.connect(fixture.home / "serving.db") as connection:
        return int(connection.execute("SELECT count(*) FROM shadow_predictions").fetchone()[0])


def summarise(
    closed: dict[str, list[ClosedRun]],
    opened: dict[str, list[OpenRun]],
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The JSON result: the best closed-loop run of each server, the kept open-loop runs pooled."""
    best = {name: max(runs, key=lambda run: run.rps) for name, runs in closed.items()}
    ratio = best["churn"].rps / best["bare"].rps
    kept = {name: [run for run in runs if not run.discarded] for name, runs in opened.items()}
    latency = {name: _latency(runs) for name, runs in kept.items()}
    late = [x for runs in kept.values() for run in runs for x in run.lateness]
    discarded = [
        {
            "server": name,
            "generator_late_p99_ms": round(percentile(run.lateness, 99) * 1000, 2),
            "p99_ms": round(percentile(run.latencies, 99) * 1000, 2),
        }
        for name, runs in opened.items()
        for run in runs
        if run.discarded
    ]
    p99 = latency["churn"]["p99_ms"]
    return (
        {
            "predict_rps": round(best["churn"].rps, 1),
            "bare_rps": round(best["bare"].rps, 1),
            "ratio": round(ratio, 3),
            **latency["churn"],
            **{f"bare_{key}": value for key, value in latency["bare"].items()},
            "rate": round(rate, 1),
            "open_loop_requests": sum(len(run.latencies) for run in kept["churn"]),
            "generator_late_p99_ms": round(percentile(late, 99) * 1000, 2),
            "discarded_runs": discarded,
            "predict_rps_median": round(statistics.median(r.rps for r in closed["churn"]), 1),
            "bare_rps_median": round(statistics.median(r.rps for r in closed["bare"]), 1),
            "predict_closed_p50_ms": round(best["churn"].p50_ms, 2),
            "predict_closed_p99_ms": round(best["churn"].p99_ms, 2),
            "predict_cpu_us_per_request": round(statistics.median(r.cpu_us for r in closed["churn"]), 1),
            "bare_cpu_us_per_request": round(statistics.median(r.cpu_us for r in closed["bare"]), 1),
            "connections": args.connections,
            "closed_loop_seconds": args.duration,
            "open_loop_seconds": args.open_duration,
            "warmup_seconds": args.warmup,
            "repeat": args.repeat,
            "ratio_target": RATIO_TARGET,
            "p99_target_ms": P99_TARGET_MS,
            "ratio_passed": ratio >= RATIO_TARGET,
            "p99_passed": p99 < P99_TARGET_MS,
            "passed": ratio >= RATIO_TARGET and p99 < P99_TARGET_MS,
        }
        | (
            _side_summary(closed, latency["shadow"], ratio, "shadow", SHADOW_SHARE)
            if "shadow" in closed
            else {}
        )
        | (
            _by_id_rate(closed) | _side_summary(closed, latency["byid"], ratio, "byid", BY_ID_SHARE)
            if "byid" in closed
            else {}
        )
    )


def _by_id_rate(closed: dict[str, list[ClosedRun]]) -> dict[str, Any]:
    """The by-id server's open-loop rate: half its own peak."""
    return {"by_id_rate": round(max(run.rps for run in closed["byid"]) / 2, 1)}


def _side_summary(
    closed: dict[str, list[ClosedRun]], latency: dict[str, Any], ratio: float, server: str, share: float
) -> dict[str, Any]:
    """A server measured beside the churn one (shadow, by id): its figures, and whether it kept
    `share` of the ratio and the p99 target. Keys are prefixed with `shadow_` or `by_id_`."""
    prefix = {"byid": "by_id"}.get(server, server)
    best = max(closed[server], key=lambda run: run.rps)
    side_ratio = best.rps / max(run.rps for run in closed["bare"])
    ratio_passed, p99_passed = side_ratio >= share * ratio, latency["p99_ms"] < P99_TARGET_MS
    figures = {
        "rps": round(best.rps, 1),
        "ratio": round(side_ratio, 3),
        **latency,
        "rps_median": round(statistics.median(r.rps for r in closed[server]), 1),
        "closed_p50_ms": round(best.p50_ms, 2),
        "closed_p99_ms": round(best.p99_ms, 2),
        "cpu_us_per_request": round(statistics.median(r.cpu_us for r in closed[server]), 1),
        "ratio_target": round(share * ratio, 3),
        "ratio_passed": ratio_passed,
        "p99_passed": p99_passed,
        "passed": ratio_passed and p99_passed,
    }
    return {f"{prefix}_{key}": value for key, value in figures.items()}


def _latency(runs: list[OpenRun]) -> dict[str, Any]:
    """p50, p99 and max over every run's requests pooled, and each run's own p99, in ms."""
    pooled = [x for run in runs for x in run.latencies]
    return {
        "p50_ms": round(percentile(pooled, 50) * 1000, 2),
        "p99_ms": round(percentile(pooled, 99) * 1000, 2),
        "max_ms": round(max(pooled) * 1000, 2),
        "p99_runs_ms": [round(percentile(run.latencies, 99) * 1000, 2) for run in runs],
        "stolen_runs_ms": [round(run.stolen_ms) for run in runs],
        "open_cpu_us_per_request": round(statistics.median(run.cpu_us for run in runs), 1),
    }


def report(result: dict[str, Any], closed: dict[str, list[ClosedRun]], args: argparse.Namespace) -> None:
    """The readable table."""
    best = {name: max(runs, key=lambda run: run.rps) for name, runs in closed.items()}
    say(
        f"\npeak, closed loop: wrk -t1 -c{args.connections} -d{args.duration:g}s, "
        f"best of {args.repeat}; server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}"
    )
    say(f"{'':34s} {'req/s best':>11s} {'median':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'CPU us/req':>11s}")
    for name, run in best.items():
        median = statistics.median(r.rps for r in closed[name])
        cpu = statistics.median(r.cpu_us for r in closed[name])
        say(
            f"{LABELS[name]:34s} {run.rps:11,.0f} {median:9,.0f} "
            f"{run.p50_ms:7.2f} {run.p99_ms:7.2f} {cpu:11.0f}"
        )
    verdict = "PASS" if result["ratio_passed"] else "FAIL"
    say(f"ratio (predict / bare req/s): {result['ratio']:.3f}   target >= {RATIO_TARGET}   {verdict}")
    if "shadow" in closed:
        verdict = "PASS" if result["shadow_ratio_passed"] else "FAIL"
        say(
            f"shadow_ratio (predict + shadow / bare req/s): {result['shadow_ratio']:.3f}   "
            f"target >= {SHADOW_SHARE:g} x ratio = {result['shadow_ratio_target']:.3f}   {verdict}"
        )
    if "byid" in closed:
        verdict = "PASS" if result["by_id_ratio_passed"] else "FAIL"
        say(
            f"by_id_ratio (predict by id / bare req/s): {result['by_id_ratio']:.3f}   "
            f"target >= {BY_ID_SHARE:g} x ratio = {result['by_id_ratio_target']:.3f}   {verdict}"
        )
    say(
        f"\nlatency, open loop at {result['rate']:,.0f} req/s (half the predict peak), "
        f"{args.repeat} x {args.open_duration:g} s each, pooled, from the scheduled send time"
    )
    say(
        f"{'':34s} {'requests':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>8s} {'CPU us/req':>11s}"
        "  p99 of each run, ms"
    )
    for name in closed:
        prefix = {"churn": "", "byid": "by_id_"}.get(name, f"{name}_")
        runs = ", ".join(f"{p99:.2f}" for p99 in result[prefix + "p99_runs_ms"])
        runs += " (CPU stolen: " + ", ".join(f"{ms}" for ms in result[prefix + "stolen_runs_ms"]) + " ms)"
        say(
            f"{LABELS[name]:34s} {result['open_loop_requests']:9,d} {result[prefix + 'p50_ms']:7.2f} "
            f"{result[prefix + 'p99_ms']:7.2f} {result[prefix + 'max_ms']:8.2f} "
            f"{result[prefix + 'open_cpu_us_per_request']:11.0f}  {runs}"
        )
    busy = result["open_cpu_us_per_request"] * result["rate"] / 1e4  # us/req x req/s, as % of a core
    bare_busy = result["bare_open_cpu_us_per_request"] * result["rate"] / 1e4
    busy_text = f"the churn server's core is {busy:.0f}% busy"
    if "shadow" in closed:
        busy_text += f", the shadow's {result['shadow_open_cpu_us_per_request'] * result['rate'] / 1e4:.0f}%"
    say(f"(at this rate {busy_text}, the bare's {bare_busy:.0f}%)")
    if "byid" in closed:
        say(f"(the by-id server's runs are at half its own peak: {result['by_id_rate']:,.0f} req/s)")
    verdict = "PASS" if result["p99_passed"] else "FAIL"
    say(f"p99 at half peak: {result['p99_ms']:.2f} ms   target < {P99_TARGET_MS:g} ms   {verdict}")
    if "shadow" in closed:
        verdict = "PASS" if result["shadow_p99_passed"] else "FAIL"
        target = f"target < {P99_TARGET_MS:g} ms"
        say(f"shadow_p99 at that rate: {result['shadow_p99_ms']:.2f} ms   {target}   {verdict}")
        verdict = "PASS" if result["shadow_passed"] else "FAIL"
        say(
            f"shadow scores stored during the run: {result['shadow_rows']:,} "
            f"(of {result['shadow_answers']:,} answers of the shadow server): "
            f"{result['shadow_coverage_peak']:.1%} of the answers at peak (it yields the CPU), "
            f"{result['shadow_coverage_half_peak']:.1%} at half the peak   shadow_passed {verdict}"
        )
    if "byid" in closed:
        verdict = "PASS" if result["by_id_p99_passed"] else "FAIL"
        target = f"target < {P99_TARGET_MS:g} ms"
        say(f"by_id_p99 at half the by-id peak: {result['by_id_p99_ms']:.2f} ms   {target}   {verdict}")
    for run in result["discarded_runs"]:
        say(
            f"(discarded and run again: {run['server']}, p99 {run['p99_ms']:.2f} ms, generator late "
            f"p99 {run['generator_late_p99_ms']:.2f} ms > {LATE_LIMIT_MS:g} ms)"
        )
    say(
        f"(generator lateness p99 {result['generator_late_p99_ms']:.2f} ms; "
        f"prediction log rows {result['prediction_log_rows']:,}; "
        f"load average {result['load_average_start']} -> {result['load_average_end']})"
    )


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk on each server first")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per server and phase")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (closed loop)")
    parser.add_argument("--open-duration", type=float, default=10.0, help="seconds per open-loop run")
    parser.add_argument("--open-connections", type=int, default=64, help="open-loop connection pool")
    parser.add_argument("--rows", type=int, default=3000, help="synthetic customers to train on")
    parser.add_argument("--workdir", type=Path, help="keep the trained home here and reuse it")
    parser.add_argument(
        "--shadow", action="store_true", help="also measure a churn server running a shadow rollout"
    )
    parser.add_argument(
        "--by-id", action="store_true", help="also measure /predict with customers sent by id (online store)"
    )
    return parser.parse_args()


def main() -> None:
    """Set up, start the servers, measure, print the table and the JSON line."""
    args = parse_args()
    check_machine()
    wrk = ensure_wrk()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serving-"))
    workdir.mkdir(parents=True, exist_ok=True)
    fixture = prepare(workdir, args.rows)
    shadow = prepare(workdir / "shadow", args.rows, shadow=True) if args.shadow else None
    shadow_before = (shadow_rows(shadow), prediction_log_rows(shadow)) if shadow else (0, 0)
    load_start = round(os.getloadavg()[0], 2)
    by_id = prepare_by_id(workdir / "by-id", args.rows) if args.by_id else None
    servers = start_servers(fixture, workdir, shadow, by_id)
    counts = [shadow_before]
    try:
        os.sched_setaffinity(0, {CLIENT_CPU})
        closed = measure_peak(wrk, servers, args)
        counts += [settled_shadow_counts(shadow)] if shadow else []
        rate = max(run.rps for run in closed["churn"]) / 2
        rates = {
            name: max(run.rps for run in runs) / 2 if name == "byid" else rate
            for name, runs in closed.items()
        }
        opened = measure_latency(servers, rates, args)
        counts += [settled_shadow_counts(shadow)] if shadow else []
    finally:
        for server in servers:
            server.stop()
    result = summarise(closed, opened, rate, args)
    if shadow is not None:
        result |= _shadow_coverage(counts)
        result["shadow_coverage_passed"] = result["shadow_coverage_half_peak"] >= SHADOW_COVERAGE
        result["shadow_passed"] = result["shadow_passed"] and result["shadow_coverage_passed"]
    result |= {
        "prediction_log_rows": prediction_log_rows(fixture),
        "load_average_start": load_start,
        "load_average_end": round(os.getloadavg()[0], 2),
        "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split(" [")[0],
        "versions": {name: version(name) for name in ("fastapi", "uvicorn", "pydantic", "lightgbm")},
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report(result, closed, args)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
