"""The model server's process: nothing of the training stack, so it starts in about a second."""

from __future__ import annotations

import subprocess
import sys

# Each takes from a tenth of a second to seconds to import, and none of them scores a customer;
# Alembic (a first migration) and Redis (a shared rate limit) load only where they are needed.
FORBIDDEN = (
    "mlflow",
    "sklearn",
    "pandas",
    "scipy",
    "optuna",
    "matplotlib",
    "lightgbm",
    "pyspark",
    "alembic",
    "redis",
)


def test_the_model_server_imports_none_of_the_training_stack() -> None:
    """A fresh interpreter that imports the app and the `churn` command loads none of them."""
    probe = (
        "import sys, churn_mlops.serving.app, churn_mlops.cli;"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"the server process imports {loaded.stdout.strip()}"
