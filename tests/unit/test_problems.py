"""What a client is told when a request fails: the service, never where it runs."""

from __future__ import annotations

import pytest

from churn_mlops.errors import ChurnError
from churn_mlops.serving.keys import KeyStoreError
from churn_mlops.serving.predlog import PredictionLogError
from churn_mlops.serving.problems import unavailable
from churn_mlops.serving.ratelimit import RateLimitBackendError

WHERE = "postgresql+psycopg://churn:***@db.internal.example:5432/serving"


@pytest.mark.parametrize(
    ("error", "told"),
    [
        (PredictionLogError(f"commit failed at {WHERE}"), "the prediction log is unavailable; try again"),
        (RateLimitBackendError("rate limit store at redis://cache.internal:6379/0"), "the rate-limit store"),
        (KeyStoreError(f"API key store at {WHERE}: timeout"), "the API key store is unavailable; try again"),
        (ChurnError(f"something at {WHERE}"), "a service this request needs is unavailable; try again"),
    ],
)
def test_a_failing_dependency_is_named_not_located(error: ChurnError, told: str) -> None:
    message = unavailable(error)
    assert message.startswith(told)
    assert "internal" not in message
    assert "5432" not in message
