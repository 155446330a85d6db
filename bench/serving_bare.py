"""The bare reference server of bench/serving.py: parse the churn request body, answer a constant.

One POST /predict whose body is a pydantic model with exactly the fields (and constraints) of the
churn server's request model, built the same way from the dataset spec; it returns a constant dict
shaped like a prediction. No auth, no rate limit, no model, no prediction log, no middleware.
Uvicorn runs it with the settings `churn serve` uses (one worker, uvloop/httptools, access log off).

    python bench/serving_bare.py --port 8001
"""

# No `from __future__ import annotations`: FastAPI reads the route signature, whose body model
# is built at run time.
import argparse
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from churn_mlops.data.spec import load_spec
from churn_mlops.serving.schemas import customer_model

ANSWER = {
    "churn_probability": 0.5,
    "prediction": 0,
    "risk": "low",
    "model_version": "0",
    "request_id": "0" * 32,
    "customer_id": None,
}


def create() -> FastAPI:
    """The bare app: one endpoint that validates a customer and returns a constant."""
    customer = customer_model(load_spec(), unknown_category="error")
    app = FastAPI(title="bare reference")

    @app.post("/predict")
    async def predict(body: customer) -> dict[str, Any]:  # type: ignore[valid-type]
        return ANSWER

    return app


def main() -> None:
    """Serve the bare app on one worker, as `churn serve` serves the real one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        "serving_bare:create",
        factory=True,
        app_dir=str(Path(__file__).parent),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
