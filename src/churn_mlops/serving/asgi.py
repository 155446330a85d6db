"""The ASGI entry point for uvicorn workers: `uvicorn churn_mlops.serving.asgi:create --factory`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_mlops.errors import ChurnError
from churn_mlops.serving.app import create_app
from churn_mlops.serving.logs import configure_json_logging


def create() -> ASGIApp:
    """The app with JSON logs, built from the environment's settings (one per worker process)."""
    configure_json_logging()
    return OneLineStartupFailure(create_app())


class OneLineStartupFailure:
    """Reports a start that fails on a ChurnError with its message alone, not Starlette's traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass every request through; hold back a failed start's traceback to replace it."""
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except ChurnError as exc:
            if not held:
                raise
            await send({"type": "lifespan.startup.failed", "message": f"cannot start: {exc}"})
        except BaseException:
            for message in held:
                await send(message)
            raise
