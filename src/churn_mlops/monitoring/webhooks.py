"""Webhook delivery of alert notifications: one JSON POST per URL, retried with backoff, never raising."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Self
from urllib.parse import urlsplit

import httpx
import orjson

from churn_mlops.errors import ConfigError

log = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# NaN becomes null and odd types in `extra` become strings, so no payload can make send raise.
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class Notification:
    """One alert's change of state ("firing" or "resolved"), as sent to every webhook."""

    rule: str
    severity: str
    window: str
    state: str
    message: str
    value: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON document: a Slack-compatible `text` line plus every field under its name."""
        text = f"[{self.severity}] {self.state.upper()} {self.rule} (window {self.window}): {self.message}"
        return {"text": text, **asdict(self)}


class _Attempt(NamedTuple):
    """The outcome of one POST: the failure (None when accepted), whether to retry, the Retry-After."""

    failure: str | None
    retry: bool = False
    retry_after: float | None = None


class WebhookSender:
    """Posts notifications to webhook URLs; failures are logged by host and reported as False."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ConfigError("webhook timeout must be > 0, retries and backoff >= 0")
        self.urls = (urls,) if isinstance(urls, str) else tuple(urls)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._owns_client = client is None
        self._client = client or httpx.Client()
        self._sleep = sleep
        self._down: set[str] = set()  # URLs that failed after all retries: not tried again by this sender

    def send(self, notification: Notification) -> bool:
        """POST the notification to every URL; True only if every one accepted it (no URLs: True)."""
        body = orjson.dumps(notification.payload(), default=str, option=JSON_OPTIONS)
        # Every URL is tried even after one fails, so one broken receiver cannot silence the others.
        delivered = [self._deliver(url, body) for url in self.urls]
        return all(delivered)

    def close(self) -> None:
        """Close the HTTP client if this sender created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _deliver(self, url: str, body: bytes) -> bool:
        """Post to one URL, retrying transient failures; log the final failure by host only.

        A URL that failed is not tried again by this sender (a run makes one), so a dead receiver
        costs a run one round of retries, not one per alert.
        """
        if url in self._down:
            return False
        for attempt in range(self.retries + 1):
            outcome = self._post(url, body)
            if outcome.failure is None:
                return True
            if not outcome.retry or attempt == self.retries:
                break
            self._sleep(self._delay(attempt, outcome.retry_after))
        log.warning("webhook to %s failed after %d attempt(s): %s", _host(url), attempt + 1, outcome.failure)
        self._down.add(url)
        return False

    def _post(self, url: str, body: bytes) -> _Attempt:
        """POST once and classify the answer."""
        try:
            response = self._client.post(url, content=body, headers=JSON_HEADERS, timeout=self.timeout)
        except TRANSIENT_ERRORS as exc:
            return _Attempt(type(exc).__name__, retry=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _Attempt(type(exc).__name__)
        if response.is_success:
            return _Attempt(None)
        retry = response.status_code == 429 or response.is_server_error
        return _Attempt(f"HTTP {response.status_code}", retry, _retry_after(response))

    def _delay(self, retry: int, retry_after: float | None) -> float:
        """The wait before a retry: the server's Retry-After (capped) or exponential backoff."""
        if retry_after is not None:
            return min(retry_after, 10 * self.backoff)
        return float(self.backoff * 2**retry)


def _retry_after(response: httpx.Response) -> float | None:
    """The numeric Retry-After header in seconds, if the server sent one."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _host(url: str) -> str:
    """The host of a webhook URL: its path carries the secret, so logs name only the host."""
    try:
        return urlsplit(url).hostname or "<no host>"
    except ValueError:
        return "<invalid url>"
