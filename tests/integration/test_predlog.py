"""The prediction log: acknowledged predictions are committed, in batches, and survive SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import sqlalchemy as sa

from churn_mlops.serving.predlog import PredictionLog, PredictionLogError, PredictionRecord, predictions_table
from churn_mlops.serving.predlog.table import WAL_LIMIT_PAGES
from churn_mlops.serving.predlog.window import QUIET_WINDOWS, WINDOWLESS_BATCHES, WINDOWLESS_SECONDS
from tests.faults import FreezableProxy
from tests.integration.predlog_rows import logged, logged_count

VICTIM = Path(__file__).with_name("predlog_victim.py")
T = TypeVar("T")
AT = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine with a bound, so a write that is never acknowledged fails instead of hanging."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def _record(request_id: str, **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "at": AT,
        "key_name": "partner-a",
        "model_version": "7",
        "inputs": {"tenure": 12, "Contract": "Month-to-month", "MonthlyCharges": 70.35},
        "probability": 0.8125,
        "prediction": 1,
        "latency_ms": 3.25,
    }
    return PredictionRecord(**(fields | changes))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(URL, table) of an empty log: a SQLite file, or a unique table in the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'predictions.db'}", "predictions"
    engine: sa.Engine = request.getfixturevalue("postgres_engine")
    return engine.url.render_as_string(hide_password=False), request.getfixturevalue("postgres_table")


@pytest.fixture
def log(target: tuple[str, str]) -> Iterator[PredictionLog]:
    """A started log on the target, closed afterwards."""
    url, table = target
    prediction_log = PredictionLog(url, table=table)
    prediction_log.start()
    yield prediction_log
    prediction_log.close()


@contextmanager
def _counting_sqlite_inserts() -> Iterator[list[int]]:
    """Count INSERT statements run on any new SQLite connection, as SQLite itself reports them."""
    seen = [0]

    def count(statement: str) -> None:
        upper = statement.lstrip().upper()
        if upper.startswith("INSERT") and not upper.startswith("INSERT INTO ALEMBIC_VERSION"):
            seen[0] += 1

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(count)

    sa.event.listen(sa.pool.Pool, "connect", on_connect)
    try:
        yield seen
    finally:
        sa.event.remove(sa.pool.Pool, "connect", on_connect)


def _transactions(target: tuple[str, str], sqlite_inserts: int) -> int:
    """Transactions that wrote the log's rows: PostgreSQL stamps each row with its transaction
    id (xmin); on SQLite every autocommitted INSERT is one."""
    url, table = target
    if not url.startswith("postgresql"):
        return sqlite_inserts
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.text(f"SELECT count(DISTINCT xmin::text) FROM {table}")) or 0)
    finally:
        engine.dispose()


def test_records_round_trip(log: PredictionLog) -> None:
    paris = timezone(timedelta(hours=2))
    _run(log.write([_record("r1"), _record("r2", key_name=None, at=AT.astimezone(paris))]))
    log.write_sync([_record("r3", inputs={"nested": {"a": [1, 2]}, "text": "é"}, prediction=0)])

    frame = logged(log)

    assert frame["request_id"].to_list() == ["r1", "r2", "r3"]
    assert frame["at"].to_list() == [AT, AT, AT]
    assert frame["key_name"].to_list() == ["partner-a", None, "partner-a"]
    assert frame["model_version"].to_list() == ["7", "7", "7"]
    assert orjson.loads(frame["inputs"][2]) == {"nested": {"a": [1, 2]}, "text": "é"}
    assert frame["probability"].to_list() == [0.8125] * 3
    assert frame["prediction"].to_list() == [1, 1, 0]
    assert frame["latency_ms"].to_list() == [3.25] * 3
    assert frame["id"].is_sorted()
    assert logged(log, limit=2)["request_id"].to_list() == ["r2", "r3"]
    assert logged_count(log) == 3


@contextmanager
def _commits_blocked(url: str, table: str) -> Iterator[None]:
    """Hold the table's write lock from another connection, so the log's commits must wait."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with closing(sqlite3.connect(str(parsed.database), isolation_level=None)) as connection:
            connection.execute("BEGIN IMMEDIATE")
            yield
            connection.execute("ROLLBACK")
        return
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_a_write_is_acknowledged_only_after_its_commit(log: PredictionLog, target: tuple[str, str]) -> None:
    async def write_while_blocked() -> None:
        with _commits_blocked(*target):
            write = asyncio.create_task(log.write([_record("held")]))
            await asyncio.sleep(0.5)
            assert not write.done(), "acknowledged while its commit could not happen"
            assert logged_count(log) == 0
        await asyncio.wait_for(write, 10)

    _run(write_while_blocked())
    assert logged(log)["request_id"].to_list() == ["held"]


def test_a_locked_sqlite_database_does_not_stop_the_event_loop(tmp_path: Path) -> None:
    """SQLite batches are committed on the event loop; one that finds the database locked
    (another process writing, a checkpoint starting the WAL over) goes to the writer thread and
    waits there, while the loop goes on serving."""
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log = PredictionLog(url)
    log.start()

    async def write_while_blocked() -> float:
        with _commits_blocked(url, "predictions"):
            held = asyncio.create_task(log.write([_record("held")]))
            longest, last = 0.0, time.perf_counter()
            for _ in range(30):
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                longest, last = max(longest, now - last), now
            assert not held.done(), "acknowledged while its commit could not happen"
        await asyncio.wait_for(held, 10)
        return longest

    try:
        longest = _run(write_while_blocked())
    finally:
        log.close()
    assert longest < 1.0, f"the event loop stood still for {longest:.2f} s while a commit waited"
    assert logged(log)["request_id"].to_list() == ["held"]


def test_concurrent_writes_are_group_committed(target: tuple[str, str]) -> None:
    async def write_all(log: PredictionLog) -> None:
        await asyncio.gather(*(log.write([_record(f"r{i}")]) for i in range(500)))

    url, table = target
    with _counting_sqlite_inserts() as inserts:
        log = PredictionLog(url, table=table)
        log.start()
        try:
            _run(write_all(log))
        finally:
            log.close()
    transactions = _transactions(target, inserts[0])

    assert logged_count(log) == 500
    assert set(logged(log)["request_id"]) == {f"r{i}" for i in range(500)}
    assert 1 <= transactions <= 20, f"{transactions} transactions for 500 writes"
    assert log.commits == transactions


WINDOW = 0.25  # seconds: long beside a commit, so waiting it out or not is plain to see


async def _timed_write(log: PredictionLog, request_id: str) -> float:
    started = time.perf_counter()
    await log.write([_record(request_id)])
    return time.perf_counter() - started


def _window_log(tmp_path: Path, in_flight: int | None = None) -> PredictionLog:
    """A log whose batches go to the writer thread, as on PostgreSQL, with a long window."""
    log = PredictionLog(
        f"sqlite:///{tmp_path / 'predictions.db'}", wait_ms=WINDOW * 1000, commit_on_loop=False
    )
    if in_flight is not None:
        log.window.in_flight = lambda: in_flight
    log.start()
    return log


def test_a_lone_client_waits_out_windows_only_now_and_then(tmp_path: Path) -> None:
    """Requests one at a time: QUIET_WINDOWS windows in a row gather nobody else, so the next
    writes go straight to the writer; a window is tried again only after WINDOWLESS_SECONDS and
    WINDOWLESS_BATCHES."""

    async def one_at_a_time(log: PredictionLog) -> tuple[list[float], list[float], float]:
        windowed = [await _timed_write(log, f"w{i}") for i in range(QUIET_WINDOWS)]
        quick = [await _timed_write(log, f"r{i}") for i in range(WINDOWLESS_BATCHES)]
        await asyncio.sleep(WINDOWLESS_SECONDS)
        return windowed, quick, await _timed_write(log, "again")

    log = _window_log(tmp_path)
    try:
        windowed, quick, again = _run(one_at_a_time(log))
    finally:
        log.close()

    assert logged_count(log) == QUIET_WINDOWS + WINDOWLESS_BATCHES + 1
    assert min(windowed) >= WINDOW * 0.9, "the first writes did not wait out their windows"
    assert sum(quick) < WINDOW, f"{WINDOWLESS_BATCHES} lone writes took {sum(quick):.3f} s"
    assert again >= WINDOW * 0.9, "no window was tried again"


def test_a_few_callers_that_wait_on_their_answers_stop_paying_the_window(tmp_path: Path) -> None:
    """Four callers, each waiting on its write before the next (four requests in flight): once all
    four wait in a window, nobody else can come, so after QUIET_WINDOWS windows they go without."""

    async def caller(log: PredictionLog, name: str) -> list[float]:
        return [await _timed_write(log, f"{name}-{i}") for i in range(10)]

    async def four(log: PredictionLog) -> list[list[float]]:
        return list(await asyncio.gather(*(caller(log, f"c{c}") for c in range(4))))

    log = _window_log(tmp_path, in_flight=4)
    try:
        seconds = _run(four(log))
    finally:
        log.close()

    assert logged_count(log) == 40
    assert all(min(calls[:QUIET_WINDOWS]) >= WINDOW * 0.9 for calls in seconds), "no window at first"
    later = [s for calls in seconds for s in calls[QUIET_WINDOWS:]]
    assert max(later) < WINDOW / 2, f"a later write waited {max(later):.3f} s"


def test_a_window_that_gathers_newcomers_is_kept(tmp_path: Path) -> None:
    """Requests that arrive on their own while a window is open join its batch, and the next
    batch gets a window too."""

    async def arrivals(log: PredictionLog, round_: int) -> None:
        writes = []
        for i in range(3):
            writes.append(asyncio.ensure_future(log.write([_record(f"{round_}-{i}")])))
            await asyncio.sleep(WINDOW / 5)
        await asyncio.gather(*writes)

    async def two_rounds(log: PredictionLog) -> list[int]:
        commits = []
        for round_ in range(2):
            await arrivals(log, round_)
            commits.append(log.commits)
        return commits

    log = _window_log(tmp_path)
    try:
        commits = _run(two_rounds(log))
    finally:
        log.close()

    assert logged_count(log) == 6
    assert commits == [1, 2], f"commits after each round: {commits}"


def test_a_request_that_arrives_during_a_window_keeps_the_windows(tmp_path: Path) -> None:
    """One writer at a time, but in every window another request arrives (the server starts it)
    without reaching the log before the window ends: the windows are not quiet, so they stay."""
    started = 0

    async def with_an_arrival(log: PredictionLog, request_id: str) -> float:
        nonlocal started
        write = asyncio.ensure_future(_timed_write(log, request_id))
        await asyncio.sleep(WINDOW / 2)
        started += 1  # a request comes in, still on its way to the log when the window closes
        return await write

    async def one_at_a_time(log: PredictionLog) -> list[float]:
        return [await with_an_arrival(log, f"a{i}") for i in range(QUIET_WINDOWS + 2)]

    log = _window_log(tmp_path, in_flight=1)
    log.window.arrivals = lambda: started
    try:
        seconds = _run(one_at_a_time(log))
    finally:
        log.close()

    assert logged_count(log) == QUIET_WINDOWS + 2
    assert min(seconds) >= WINDOW * 0.9, f"a window was dropped: {[round(s, 3) for s in seconds]}"


def test_close_commits_everything_queued_then_refuses_writes(target: tuple[str, str]) -> None:
    url, table = target
    prediction_log = PredictionLog(url, table=table, batch_size=10_000, wait_ms=30_000, commit_on_loop=False)
    prediction_log.start()

    async def queue_then_close() -> list[BaseException | None]:
        tasks = [asyncio.create_task(prediction_log.write([_record(f"r{i}")])) for i in range(200)]
        await asyncio.sleep(0.05)  # every task has queued its record; the writer waits for more
        assert logged_count(prediction_log) == 0
        started = time.monotonic()
        prediction_log.close()
        assert time.monotonic() - started < 10, "close waited out the batching window"
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = _run(queue_then_close())

    assert results == [None] * 200
    assert logged_count(prediction_log) == 200
    assert prediction_log.commits == 1
    with pytest.raises(PredictionLogError, match="closed"):
        _run(prediction_log.write([_record("late")]))
    with pytest.raises(PredictionLogError, match="closed"):
        prediction_log.write_sync([_record("late")])
    assert logged_count(prediction_log) == 200


def test_close_on_the_loop_commits_the_batch_that_loop_has_open(tmp_path: Path) -> None:
    """The server closes the log on its event loop (the lifespan's shutdown). Predictions written
    in the same turn wait for a commit queued for the next turn: close() hands them to the writer,
    so every one is committed and acknowledged, none twice."""
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    log.start()

    committed_at_close: list[int] = []

    def close() -> None:
        log.close()
        committed_at_close.append(logged_count(log))

    async def write_then_close() -> list[BaseException | None]:
        tasks = [asyncio.create_task(log.write([_record(f"r{i}")])) for i in range(50)]
        asyncio.get_running_loop().call_soon(close)  # runs right after the writes, same turn
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = _run(write_then_close())

    assert committed_at_close == [50], "close() returned before the loop's open batch was committed"
    assert results == [None] * 50
    assert sorted(logged(log)["request_id"]) == sorted(f"r{i}" for i in range(50))


def test_failed_commit_reaches_every_waiter_and_the_writer_recovers(
    log: PredictionLog, target: tuple[str, str]
) -> None:
    url, table = target
    engine = sa.create_engine(url)
    try:
        log.write_sync([_record("before")])
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE {table}"))

        async def write_all() -> list[BaseException | None]:
            writes = (log.write([_record(f"lost{i}")]) for i in range(20))
            return await asyncio.gather(*writes, return_exceptions=True)

        results = _run(write_all())
        with pytest.raises(PredictionLogError, match="commit failed"):
            log.write_sync([_record("lost-sync")])

        predictions_table(table).create(engine)
        log.write_sync([_record("after")])
    finally:
        engine.dispose()

    assert all(isinstance(result, PredictionLogError) for result in results), results
    assert len({id(result) for result in results}) == 20, "waiters share one exception object"
    assert logged(log)["request_id"].to_list() == ["after"]


def test_the_checkpointer_starts_the_sqlite_wal_over_under_steady_writes(tmp_path: Path) -> None:
    """Each commit appends at least one 4 KiB page to the WAL, and a PASSIVE checkpoint beside a
    busy writer never catches up: the checkpointer must start the WAL over itself, long before
    SQLite's own checkpoint inside a commit (at WAL_LIMIT_PAGES) would hold every waiting
    prediction for its fsyncs."""
    database = tmp_path / "p.db"
    wal = Path(f"{database}-wal")
    limit = WAL_LIMIT_PAGES * 4096
    prediction_log = PredictionLog(f"sqlite:///{database}", wait_ms=0, checkpoint_seconds=0.05)
    prediction_log.start()
    commits, largest, deadline = 0, 0, time.monotonic() + 60
    try:
        while commits * 4096 < 4 * limit and time.monotonic() < deadline:
            prediction_log.write_sync([_record(f"r{commits}")])
            commits += 1
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    finally:
        prediction_log.close()
    assert logged_count(prediction_log) == commits
    assert commits * 4096 >= 4 * limit, "too few commits in a minute to tell"
    assert largest < limit, f"WAL reached {largest:,} bytes after {commits:,} commits"


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_BATCH is Linux's")
def test_the_checkpointer_never_preempts_the_event_loop(tmp_path: Path) -> None:
    """A checkpoint round takes milliseconds of CPU, and a normal thread waking for it would
    preempt the event loop on the same core: the checkpointer thread runs as SCHED_BATCH, and only
    it (the writer thread and the server's own threads keep the normal policy)."""
    prediction_log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}")
    prediction_log.start()
    try:
        threads = {thread.name: thread.native_id for thread in threading.enumerate()}
        checkpointer, writer = threads["prediction-log-checkpointer"], threads["prediction-log-writer"]
        assert checkpointer is not None
        assert writer is not None
        deadline = time.monotonic() + 10  # the thread changes its policy as it starts
        while os.sched_getscheduler(checkpointer) != os.SCHED_BATCH and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.sched_getscheduler(checkpointer) == os.SCHED_BATCH
        assert os.sched_getscheduler(writer) == os.SCHED_OTHER
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
    finally:
        prediction_log.close()


def test_bad_records_and_unstarted_logs_are_refused(tmp_path: Path) -> None:
    prediction_log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(PredictionLogError, match="not started"):
        prediction_log.write_sync([_record("early")])
    prediction_log.start()
    try:
        with pytest.raises(PredictionLogError, match="timezone-aware"):
            prediction_log.write_sync([_record("naive", at=datetime(2025, 3, 1, 12, 30))])
        with pytest.raises(PredictionLogError, match="not JSON"):
            prediction_log.write_sync([_record("odd", inputs={"when": object()})])
        prediction_log.write_sync([_record("fine")])
    finally:
        prediction_log.close()
    assert logged(prediction_log)["request_id"].to_list() == ["fine"]
    with pytest.raises(PredictionLogError, match="in-memory"):
        PredictionLog("sqlite://").start()


def _pump(stream: Any, lines: list[str], enough: threading.Event, wanted: int) -> None:
    """Collect the child's acknowledgements as they arrive."""
    for line in stream:
        lines.append(line)
        if len(lines) >= wanted:
            enough.set()
    enough.set()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_loses_no_acknowledged_prediction(tmp_path: Path) -> None:
    database = tmp_path / "victim.db"
    stderr_path = tmp_path / "victim.stderr"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(VICTIM), f"sqlite:///{database}", "32", "120"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: list[str] = []
    enough = threading.Event()
    reader = threading.Thread(target=_pump, args=(child.stdout, lines, enough, 20_000), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        enough.wait(1.5)  # writes keep flowing: the kill lands with batches in flight
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        reader.join(30)
        if child.stdout is not None:
            child.stdout.close()

    assert child.returncode == -signal.SIGKILL, stderr_path.read_text()
    acknowledged = {line.strip() for line in lines if line.endswith("\n")}
    assert len(acknowledged) >= 100, (len(acknowledged), stderr_path.read_text())
    with closing(sqlite3.connect(database)) as connection:
        stored = {row[0] for row in connection.execute("SELECT request_id FROM predictions")}
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged predictions lost"


@pytest.mark.postgres
def test_a_hung_database_fails_writes_within_the_timeout_and_the_log_recovers(
    postgres_engine: sa.Engine, postgres_table: str
) -> None:
    """A database that stops answering mid-conversation: each write waiting on it fails once the
    timeout has passed, the health check says so, and writes succeed again once it answers."""
    with FreezableProxy(postgres_engine.url.port or 5432) as proxy:
        url = postgres_engine.url.set(port=proxy.port).render_as_string(hide_password=False)
        prediction_log = PredictionLog(url, table=postgres_table, timeout=2.0)
        prediction_log.start()
        try:
            _run(prediction_log.write([_record("before")]))
            proxy.freeze()
            with pytest.raises(PredictionLogError, match="did not answer within 2 s"):
                _run(prediction_log.write([_record("during")]))
            with pytest.raises(PredictionLogError, match="timeout"):
                prediction_log.ping()
            proxy.thaw()
            _run(prediction_log.write([_record("after")]))
            prediction_log.ping()
        finally:
            proxy.thaw()
            prediction_log.close()
        assert {"before", "after"} <= set(logged(prediction_log)["request_id"])


def test_an_unusable_url_is_refused_without_its_password() -> None:
    with pytest.raises(PredictionLogError) as raised:
        PredictionLog("nosuchdb://churn:hunter2@db.internal/x").start()
    assert "hunter2" not in str(raised.value)
