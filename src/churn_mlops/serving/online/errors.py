"""The online lookup's errors: an unreachable store, unknown customers, stale features."""

from __future__ import annotations

from collections.abc import Sequence

from churn_mlops.errors import ChurnError, NotFoundError


class FeatureStoreError(ChurnError):
    """The online feature store cannot be reached, or holds what it should not."""


class UnknownCustomerError(NotFoundError):
    """Customer ids the online feature store holds no features for."""

    def __init__(self, customer_ids: Sequence[str]) -> None:
        self.customer_ids = list(customer_ids)
        named = ", ".join(repr(i) for i in self.customer_ids)
        noun = "customer id" if len(self.customer_ids) == 1 else "customer ids"
        super().__init__(f"unknown {noun} {named}: the online feature store holds no features for it")


class StaleFeaturesError(ChurnError):
    """Customers whose stored features are older than `feature_store.ttl_days`."""

    def __init__(self, ages: Sequence[tuple[str, float]], ttl_days: float) -> None:
        self.customer_ids = [customer_id for customer_id, _ in ages]
        named = "; ".join(f"customer {customer_id!r}'s are {days:.1f} days old" for customer_id, days in ages)
        super().__init__(
            f"stale features: {named}, over feature_store.ttl_days ({ttl_days:g}); "
            "send every field, or materialize newer features"
        )
