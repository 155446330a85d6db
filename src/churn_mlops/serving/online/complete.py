"""Complete a request's customers from the online store: sent fields override stored ones.

A customer sent with every required field is scored as sent, with no lookup. One sent with its
id and some (or none) of the fields is looked up: the stored features, overridden by the fields
sent, are validated by the full request model, so the record that is scored, explained, logged
and profiled is the one the client would have sent with every field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from churn_mlops.serving.online.errors import StaleFeaturesError, UnknownCustomerError
from churn_mlops.serving.online.store import OnlineStore, Stored

Record = dict[str, Any]
DAY = 86_400.0


@dataclass(frozen=True)
class Completed:
    """The records to score, and for each looked-up one its features' time and staleness."""

    records: list[Record]
    features: dict[int, dict[str, Any]]  # row -> {"as_of": ..., "age_days": ..., "stale": ...}


class Completer:
    """Turns parsed request customers into full records, looking up those sent by id."""

    def __init__(
        self,
        customer: type[BaseModel],
        id_field: str,
        *,
        ttl_days: float,
        stale: Literal["error", "flag"],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.full: TypeAdapter[Any] = TypeAdapter(customer)
        self.id_field = id_field
        self.required = tuple(name for name, field in customer.model_fields.items() if field.is_required())
        self._required = frozenset(self.required)
        self.ttl = timedelta(days=ttl_days)
        self.stale = stale
        self.clock = clock

    async def complete(
        self, customers: Sequence[BaseModel], store: OnlineStore | None, *, batch: bool
    ) -> Completed:
        """The full records; a 422 naming missing fields where no id (or no store) fills them."""
        partial = [
            i for i, customer in enumerate(customers) if not self._required <= customer.model_fields_set
        ]
        if not partial:  # every field sent: today's path, no lookup
            return Completed([customer.model_dump() for customer in customers], {})
        self._check_fillable(customers, partial, store, batch)
        assert store is not None  # _check_fillable refuses otherwise
        ids = [getattr(customers[i], self.id_field) for i in partial]
        found = await store.read(ids)
        unknown = [customer_id for customer_id, stored in zip(ids, found, strict=True) if stored is None]
        if unknown:
            raise UnknownCustomerError(unknown)
        looked_up = dict(zip(partial, (s for s in found if s is not None), strict=True))
        features = self._freshness(customers, looked_up)
        records = [
            self._merged(customer, looked_up[i], i if batch else None)
            if i in looked_up
            else customer.model_dump()
            for i, customer in enumerate(customers)
        ]
        return Completed(records, features)

    def _check_fillable(
        self, customers: Sequence[BaseModel], partial: list[int], store: OnlineStore | None, batch: bool
    ) -> None:
        """RequestValidationError naming every missing field that no lookup can fill."""
        errors = []
        for i in partial:
            customer = customers[i]
            if store is not None and getattr(customer, self.id_field) is not None:
                continue
            for name in (name for name in self.required if name not in customer.model_fields_set):
                errors.append(
                    {"type": "missing", "loc": _where(i if batch else None, name), "msg": "Field required"}
                )
        if errors:
            raise RequestValidationError(errors)

    def _freshness(
        self, customers: Sequence[BaseModel], looked_up: dict[int, Stored]
    ) -> dict[int, dict[str, Any]]:
        """Each looked-up row's as-of time and age; StaleFeaturesError when stale ones are refused."""
        now = self.clock()
        ages = {row: now - stored.as_of for row, stored in looked_up.items()}
        features = {
            row: {
                "as_of": looked_up[row].as_of.isoformat(),
                "age_days": round(age.total_seconds() / DAY, 3),
                "stale": age > self.ttl,
            }
            for row, age in ages.items()
        }
        stale = [
            (str(getattr(customers[row], self.id_field)), age.total_seconds() / DAY)
            for row, age in ages.items()
            if age > self.ttl
        ]
        if stale and self.stale == "error":
            raise StaleFeaturesError(stale, self.ttl.total_seconds() / DAY)
        return features

    def _merged(self, customer: BaseModel, stored: Stored, row: int | None) -> Record:
        """The stored features overridden by the fields sent, validated as a full request."""
        merged = stored.values | {name: getattr(customer, name) for name in customer.model_fields_set}
        try:
            full: BaseModel = self.full.validate_python(merged)
        except ValidationError as exc:
            customer_id = getattr(customer, self.id_field)
            errors = [_stored_problem(error, row, customer_id) for error in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None
        return full.model_dump()


def _where(row: int | None, name: str) -> tuple[Any, ...]:
    return ("body", name) if row is None else ("body", row, name)


def _stored_problem(error: Any, row: int | None, customer_id: str) -> dict[str, Any]:
    """A validation error of a merged record, said to be about the stored value."""
    name = ".".join(str(part) for part in error["loc"])
    where = f"customer {customer_id!r}'s stored value"
    message = "no value stored, and none sent" if error["type"] == "missing" else f"{where}: {error['msg']}"
    return {**error, "loc": _where(row, name), "msg": message}
