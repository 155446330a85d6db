"""The model server's process: nothing of the training stack, so it starts in about a second."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from churn_mlops.cli.output import JOBS_MODULES

ROOT = Path(__file__).resolve().parents[2]

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
    "pandera",
    "feast",
    "lleaves",
    "llvmlite",
)
JOBS_EXTRA_MODULES = {"scikit-learn": "sklearn", "pandera[polars]": "pandera"}  # where the names differ


def test_the_model_server_imports_none_of_the_training_stack() -> None:
    """A fresh interpreter that imports the app and the `churn` command loads none of them."""
    probe = (
        "import sys, churn_mlops.serving.app, churn_mlops.cli;"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"the server process imports {loaded.stdout.strip()}"


def test_the_jobs_extra_holds_only_what_the_server_never_imports() -> None:
    """A serving-only install (no jobs extra) runs `churn serve`: every package left out is one
    the test above keeps out of the server, and the CLI names each when a job needs it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [
        re.split(r"[<>=~!;]", requirement)[0].strip()
        for requirement in project["optional-dependencies"]["jobs"]
    ]
    modules = {JOBS_EXTRA_MODULES.get(name, name) for name in names}
    assert modules <= set(FORBIDDEN)
    assert modules == JOBS_MODULES


def test_a_job_without_the_jobs_extra_says_how_to_install_it(tmp_path: Path) -> None:
    blocked = ";".join(
        f"sys.modules[{m!r}] = None" for m in sorted(JOBS_MODULES)
    )  # import fails as if absent
    command = "sys.argv = ['churn', 'registry', 'list']; from churn_mlops.cli import main; main()"
    probe = f"import sys; {blocked}; {command}"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "CHURN_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "uv sync --extra jobs" in done.stderr
    assert "Traceback" not in done.stderr
