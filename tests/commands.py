"""Running the `churn` command line in-process, as the CLI tests of every tier do."""

from __future__ import annotations

from typer.testing import CliRunner

from churn_mlops.cli import app

runner = CliRunner()


def churn(*args: str, code: int = 0) -> str:
    """Run `churn args...`, check the exit code, and return stdout (stderr on failure)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}{result.stderr}"
    assert "Traceback" not in result.output + result.stderr
    return result.stdout if code == 0 else result.stderr
