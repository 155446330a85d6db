"""The rollout state in the serving database: the rollouts, the shadow's scores, each server's counts."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

SHADOW, CANARY = "shadow", "canary"

metadata = sa.MetaData()
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=False),
    sa.Column("fraction", sa.Float, nullable=False),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("started_by", sa.String(100), nullable=False),
    sa.Column("ended_at", sa.String(32), nullable=True),
    sa.Column("ended_by", sa.String(100), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("prediction", sa.SmallInteger, nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=False),
    sa.Column("champion_probability", sa.Float, nullable=False),
    sa.Column("champion_prediction", sa.SmallInteger, nullable=False),
)

rollout_counts = sa.Table(
    "rollout_counts",
    metadata,
    sa.Column("rollout_id", sa.BigInteger, primary_key=True),
    sa.Column("server", sa.String(200), primary_key=True),  # host:pid of the worker
    sa.Column("answered", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("agreed", sa.BigInteger, nullable=False),  # answers whose decision the champion shares
    sa.Column("updated_at", sa.String(32), nullable=False),
)


@dataclass(frozen=True)
class ActiveRollout:
    """The rollout in force: its mode and the model it tries."""

    id: int
    mode: str
    model_version: str
    champion_version: str
    fraction: float
    started_at: str


def active_rollout(connection: sa.Connection) -> ActiveRollout | None:
    """The rollout that has started and not ended, if any."""
    r = rollouts
    row = connection.execute(
        sa.select(r.c.id, r.c.mode, r.c.model_version, r.c.champion_version, r.c.fraction, r.c.started_at)
        .where(r.c.ended_at.is_(None))
        .order_by(r.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return ActiveRollout(int(row[0]), row[1], row[2], row[3], float(row[4]), row[5])


def store_counts(engine: sa.Engine, rollout_id: int, answered: int, failed: int, agreed: int = 0) -> None:
    """Replace this worker's counts for the rollout."""
    server = f"{socket.gethostname()}:{os.getpid()}"
    c = rollout_counts
    with engine.begin() as connection:
        connection.execute(c.delete().where(c.c.rollout_id == rollout_id, c.c.server == server))
        connection.execute(
            c.insert().values(
                rollout_id=rollout_id,
                server=server,
                answered=answered,
                failed=failed,
                agreed=agreed,
                updated_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
        )


def roll_back(engine: sa.Engine, rollout_id: int, version: str, reason: str) -> bool:
    """End a rollout as rolled back, and fire an alert saying why; False if it had already ended."""
    from churn_mlops.monitoring import tables

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with engine.begin() as connection:
        ended = connection.execute(
            rollouts.update()
            .where(rollouts.c.id == rollout_id, rollouts.c.ended_at.is_(None))
            .values(ended_at=now, ended_by="guard", outcome="rolled back", reason=reason)
        ).rowcount
        if ended:
            connection.execute(
                tables.alerts.insert().values(
                    rule="canary_rollback",
                    kind="rollout",
                    window_start=now,
                    model_version=version,
                    severity="critical",
                    state="firing",
                    value=None,
                    threshold=0.0,
                    message=f"canary v{version} rolled back: {reason}",
                    fired_at=now,
                )
            )
    return bool(ended)
