"""Running a churn job on a cron expression, in-process: the laptop's (and compose's) scheduler.

Each run is a fresh `churn` process, so a run that fails or leaks memory does not take the
scheduler with it; one run of a job at a time, and a run missed while the previous one was
still going is run once, not once per missed tick. At scale the same jobs are Kubernetes
CronJobs instead.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from churn_mlops.errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

logger = logging.getLogger(__name__)


def check_command(group: Any, words: Sequence[str]) -> None:
    """Refuse, before the first run, a command line that `churn` would refuse: unknown command or option.

    `group` is the CLI's root command (`typer.main.get_command(app)`); typer carries its own copy
    of click, so groups are told apart by what they do (list subcommands), not by their class.
    """
    command, rest = group, list(words)
    context = command.make_context("churn", [], resilient_parsing=True)
    while hasattr(command, "list_commands") and rest and not rest[0].startswith("-"):
        found = command.get_command(context, rest[0])
        if found is None:
            raise ConfigError(
                f"--command: churn has no command {' '.join(words[: len(words) - len(rest) + 1])!r}"
            )
        command, rest = found, rest[1:]
        context = command.make_context(command.name, [], parent=context, resilient_parsing=True)
    if hasattr(command, "list_commands"):
        raise ConfigError(f"--command: {' '.join(words)!r} names a group; add one of its commands")
    try:
        command.make_context(command.name, list(rest), parent=context.parent)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # click's (or typer's click's) usage errors
            raise
        raise ConfigError(f"--command {' '.join(words)!r}: {exc.format_message()}") from exc


def cron_trigger(cron: str) -> CronTrigger:
    """The trigger of a five-field cron expression (UTC), or a ConfigError saying what is wrong."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(cron, timezone=UTC)
    except ValueError as exc:
        raise ConfigError(
            f"--cron {cron!r} is not a cron expression (five fields, e.g. '0 3 * * *'): {exc}"
        ) from exc


def run_on_schedule(cron: str, words: Sequence[str]) -> None:
    """Run `churn WORDS...` at every tick of `cron` (five fields, UTC) until interrupted."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    trigger = cron_trigger(cron)
    scheduler = BlockingScheduler(timezone=UTC)
    scheduler.add_job(
        run_once, trigger, args=[list(words)], max_instances=1, coalesce=True, misfire_grace_time=3600
    )
    first = trigger.get_next_fire_time(None, datetime.now(UTC))
    logger.warning("churn %s on %r (UTC); first run at %s", shlex.join(words), cron, first)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        scheduler.shutdown(wait=False)


def run_once(words: Sequence[str]) -> int:
    """One run of `churn WORDS...` in a child process; its exit code, logged."""
    started = datetime.now(UTC)
    done = subprocess.run([sys.executable, "-m", "churn_mlops", *words], check=False)
    seconds = (datetime.now(UTC) - started).total_seconds()
    log = logger.warning if done.returncode else logger.info
    log("churn %s ended with exit code %d after %.1f s", shlex.join(words), done.returncode, seconds)
    return done.returncode
