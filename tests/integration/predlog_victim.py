"""The child of the SIGKILL test: writes predictions until killed, printing each acknowledged id.

Usage: python predlog_victim.py SQLITE_URL TASKS SECONDS (SECONDS bounds its life if nobody kills it).
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

from churn_mlops.serving.predlog import PredictionLog, PredictionRecord


async def _writer(log: PredictionLog, task: int, deadline: float) -> None:
    n = 0
    while time.monotonic() < deadline:
        request_id = f"{task}-{n}"
        record = PredictionRecord(request_id, datetime.now(UTC), "victim", "1", {"task": task}, 0.5, 1, 0.1)
        await log.write([record])
        sys.stdout.write(request_id + "\n")
        sys.stdout.flush()
        n += 1


async def _main(url: str, tasks: int, seconds: float) -> None:
    log = PredictionLog(url)
    log.start()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_writer(log, task, deadline) for task in range(tasks)))
    log.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
