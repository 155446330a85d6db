"""The Prometheus, Alertmanager and Grafana configs under infra/ are valid and use only exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from churn_mlops.monitoring.gauges import families
from churn_mlops.serving.metrics import Metrics
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
ALERTS = INFRA / "prometheus" / "alerts.yml"
ALERTMANAGER = INFRA / "alertmanager" / "alertmanager.yml"
GRAFANA = INFRA / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DASHBOARD_MOUNT = "/var/lib/grafana/dashboards"  # where infra/compose.yaml mounts DASHBOARDS

QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
METRIC = re.compile(r"\bchurn_[A-Za-z0-9_:]*")
SELECTOR = re.compile(r"\b(churn_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
WINDOW = {
    "model_version": "1",
    "complete": True,
    "drift": {
        "share": 0.1,
        "score": {"value": 0.02},
        "features": [{"feature": "contract", "psi": 0.3, "js": 0.2, "drifted": True}],
    },
    "performance": {"coverage": 0.5, "realised": {"roc_auc": 0.8}, "estimated": {"roc_auc": 0.79}},
}


class StoredResults(Collector):
    """The monitoring gauges of one stored window, as the server's collector yields them."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauge families, each with a sample."""
        yield from families([WINDOW], {"warning": 1}, "2026-01-02T03:04:05+00:00")


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; skipped where absent, a failure in CI."""
    return require_tool("promtool", "run scripts/test-tools, which installs Debian's prometheus")


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Each series name on the server's /metrics, with its label names."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # the in-process registry
        metrics = Metrics()
    metrics.count_request("/predict", 200, 0.01)
    metrics.count_prediction("1", 0.3, 0)
    metrics.count_rate_limited("client")
    metrics.set_model("1", None)
    metrics.extra.append(StoredResults())
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def unknown_metrics(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """The churn_ metrics, and label names of churn_ selectors, that `expr` uses but the server lacks."""
    bare = QUOTED.sub('""', expr)  # label values may contain anything
    missing = [name for name in METRIC.findall(bare) if name not in exported]
    for name, matchers in SELECTOR.findall(bare):
        labels = exported.get(name, set())
        missing += [f"{name}{{{label}}}" for label in MATCHER.findall(matchers) if label not in labels]
    return missing


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of a dashboard, by where it is."""
    queries = {f"{p['title']} {t['refId']}": t["expr"] for p in dashboard["panels"] for t in p["targets"]}
    for variable in dashboard["templating"]["list"]:
        queries[f"${variable['name']}"] = variable["query"]["query"]
    return queries


def load_yaml(path: Path) -> Any:
    """A YAML file's content."""
    return yaml.safe_load(path.read_text())


def load_dashboard() -> dict[str, Any]:
    """The Churn serving dashboard."""
    return json.loads((DASHBOARDS / "churn.json").read_text())


def compose_mounts(compose: Path, service: str) -> dict[str, Path]:
    """A compose service's bind mounts: target path to the host folder."""
    mounts: dict[str, Path] = {}
    for volume in load_yaml(compose)["services"][service].get("volumes", []):
        source, target = (
            (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        )
        mounts[target] = (compose.parent / source).resolve()
    return mounts


@pytest.mark.parametrize(
    "command",
    [
        ("check", "config", "infra/prometheus/prometheus.yml"),
        ("check", "rules", "infra/prometheus/alerts.yml"),
        ("test", "rules", "infra/prometheus/alerts_test.yml"),
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_config_rules_and_rule_tests(promtool: str, command: tuple[str, ...]) -> None:
    done = subprocess.run([promtool, *command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_exported_names_include_every_kind_of_series(exported: dict[str, set[str]]) -> None:
    assert {"churn_http_requests_total", "churn_http_request_seconds_bucket", "churn_model_info"} <= set(
        exported
    )
    assert {"churn_monitor_feature_psi", "churn_monitor_last_run_timestamp_seconds"} <= set(exported)
    assert unknown_metrics('rate(churn_http_request_total{status="500"}[5m])', exported)
    assert unknown_metrics('churn_model_info{model_version="1"}', exported)


def test_alert_rules_use_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    missing = {rule["alert"]: unknown_metrics(rule["expr"], exported) for rule in rules}
    assert {alert: names for alert, names in missing.items() if names} == {}


def test_every_alert_says_how_bad_and_what_to_look_at() -> None:
    for rule in (rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_dashboard_queries_use_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    missing = {
        where: unknown_metrics(q, exported) for where, q in dashboard_queries(load_dashboard()).items()
    }
    assert {where: names for where, names in missing.items() if names} == {}


def test_every_panel_and_query_uses_the_provisioned_datasource() -> None:
    (source,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    dashboard = load_dashboard()
    used = [p["datasource"] for p in dashboard["panels"]]
    used += [t["datasource"] for p in dashboard["panels"] for t in p["targets"]]
    used += [v["datasource"] for v in dashboard["templating"]["list"]]
    assert {(d["type"], d["uid"]) for d in used} == {("prometheus", source["uid"])}


def test_the_dashboard_has_its_uid_and_distinct_panel_ids() -> None:
    dashboard = load_dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert dashboard["uid"] == "churn-serving"
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])


def test_the_dashboard_provider_reads_where_compose_mounts_the_dashboards() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "churn.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARD_MOUNT
    compose = INFRA / "compose.yaml"
    if compose.exists():  # compose may come later; then its mount must agree
        assert compose_mounts(compose, "grafana").get(DASHBOARD_MOUNT) == DASHBOARDS


def test_alertmanager_routes_to_defined_receivers() -> None:
    config = load_yaml(ALERTMANAGER)
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert {r["receiver"] for r in routes} <= receivers
    assert "alertname" in config["route"]["group_by"]
    assert all(hook["url"] for r in config["receivers"] for hook in r["webhook_configs"])
    amtool = shutil.which("amtool")
    if amtool is not None:
        done = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
