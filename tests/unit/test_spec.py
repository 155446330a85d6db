"""The dataset contract: the built-in Telco spec, custom specs, and specs that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from churn_mlops.data.spec import DatasetSpec, Kind, load_spec, parse_spec
from churn_mlops.errors import SpecError

MINIMAL = """
name: bank
id: {name: client_id, raw: ClientNo}
target: {name: exited, raw: Exited, positive: "1", negative: "0"}
features:
  - {name: age, raw: Age, type: numeric, integer: true, min: 18, max: 100}
  - {name: country, raw: Geography, type: categorical, categories: [France, Spain]}
  - {name: active, raw: IsActiveMember, type: boolean}
"""


def test_default_spec_is_the_telco_schema(spec: DatasetSpec) -> None:
    assert spec.name == "telco"
    assert spec.id.raw == "customerID"
    assert spec.target.name == "churn"
    assert spec.target.positive == "Yes"
    assert len(spec.columns) == 21
    assert spec.feature("monthly_charges").raw == "MonthlyCharges"
    assert spec.feature("total_charges").nullable
    assert spec.feature("contract").categories == ("Month-to-month", "One year", "Two year")
    assert spec.feature("senior_citizen").type is Kind.BOOLEAN


def test_a_new_dataset_is_a_new_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "bank.yaml"
    path.write_text(MINIMAL)
    spec = load_spec(path)
    assert spec.columns == ("client_id", "age", "country", "active", "exited")
    assert spec.feature("age").source_names == ("Age", "age")


def test_digest_changes_with_the_contract() -> None:
    changed = MINIMAL.replace("max: 100", "max: 99")
    assert parse_spec(MINIMAL).digest() == parse_spec(MINIMAL).digest()
    assert parse_spec(MINIMAL).digest() != parse_spec(changed).digest()


def test_timestamps_are_optional_and_keep_an_old_specs_digest(spec: DatasetSpec) -> None:
    plain = parse_spec(MINIMAL)
    assert plain.event_time is None
    assert plain.time_columns == ()
    assert parse_spec(MINIMAL + "event_time: null\n").digest() == plain.digest()
    timed = parse_spec(MINIMAL + "event_time: {name: as_of, raw: AsOf}\n")
    assert timed.time_columns == ("as_of",)
    assert timed.digest() != plain.digest()
    assert spec.time_columns == ("snapshot_at", "churn_observed_at")
    assert "snapshot_at" not in spec.columns, "times are not features"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [", "not valid YAML"),
        ("- just a list", "must be a YAML mapping"),
        (MINIMAL.replace("categories: [France, Spain]", "categories: []"), "needs a list of categories"),
        (MINIMAL.replace("name: age", "name: Age"), "features.0.name"),
        (MINIMAL.replace("min: 18", "min: 180"), "min > max"),
        (MINIMAL.replace("name: country", "name: age"), "used twice: age"),
        (MINIMAL.replace("type: boolean", "type: flag"), "features.2.type"),
        (MINIMAL + "colour: blue\n", "colour"),
        (MINIMAL + "label_time: {name: seen_at}\n", "label_time needs an event_time"),
        (MINIMAL + "event_time: {name: age}\n", "used twice: age"),
        (MINIMAL + "event_time: {name: At}\n", "event_time.name"),
    ],
)
def test_a_bad_spec_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(text, origin="bank.yaml")


def test_a_missing_spec_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read spec"):
        load_spec(tmp_path / "nope.yaml")
