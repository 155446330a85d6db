"""Monitoring profiles of Telco traffic: the reference, counts that add up, drift and data quality."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.features import transform
from churn_mlops.features.spec import FeatureSpec, fit_features
from churn_mlops.models.profile import reference_profile
from churn_mlops.models.slices import slice_labels
from churn_mlops.monitoring import stats
from churn_mlops.monitoring.counting import Encoded, build_profile
from churn_mlops.monitoring.drift import drift_report, quality_report, score_drift
from churn_mlops.monitoring.profile import FeatureCounts, Profile, ScoreCounts, total
from churn_mlops.monitoring.reference import Reference
from churn_mlops.settings import DriftSettings

BOOLEANS = ("senior_citizen", "partner", "dependents", "phone_service", "paperless_billing")
SEED = 20_240_611


def _canonical(rows: int, seed: int, spec: DatasetSpec, drift: float = 0.0) -> pl.DataFrame:
    return validate(pl.concat(generate(rows, seed=seed, drift=drift)), spec).valid


def _scores(frame: pl.DataFrame, seed: int) -> np.ndarray:
    """Scores like a model's: higher for month-to-month contracts, never exactly on a bin edge."""
    rng = np.random.default_rng(seed)
    monthly = (frame.get_column("contract") == "Month-to-month").fill_null(False).to_numpy()
    return np.clip(rng.beta(2, 5, frame.height) + 0.3 * monthly, 0.0, 1.0)


def _profile(frame: pl.DataFrame, reference: Reference, seed: int = 0) -> Profile:
    scores = _scores(frame, seed)
    return build_profile(frame, scores, (scores >= reference.threshold).astype(np.int64), reference)


@pytest.fixture(scope="module")
def train(spec: DatasetSpec) -> pl.DataFrame:
    return _canonical(20_000, 1, spec)


@pytest.fixture(scope="module")
def reference(train: pl.DataFrame, spec: DatasetSpec) -> Reference:
    document = reference_profile(train, _scores(train, 99), fit_features(train, spec))
    return Reference.from_profile("v1", json.loads(json.dumps(document)), 0.5, {"roc_auc": 0.8})


@pytest.fixture(scope="module")
def window(spec: DatasetSpec) -> pl.DataFrame:
    """An undrifted window with missing values, out-of-range numbers and unseen categories."""
    frame = _canonical(3000, 2, spec)
    rng = np.random.default_rng(SEED)

    def damage(column: str, rows: int, value: object) -> pl.Expr:
        hit = pl.Series(rng.random(frame.height) < rows / frame.height)
        return pl.when(hit).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)

    return (
        frame.with_columns(
            damage("tenure", 40, None),
            damage("partner", 25, None),
            damage("contract", 30, None),
            damage("monthly_charges", 20, 500.0),
            damage("total_charges", 15, -3.0),
        )
        .with_columns(
            damage("contract", 12, "Weekly"),
            damage("payment_method", 9, "Cash"),
        )
        .with_columns(damage("payment_method", 4, "Bitcoin"))
    )


# The reference document.


def test_reference_parses_categories_apart_from_missing() -> None:
    document = {
        "rows": 10,
        "numeric": {
            "age": {
                "edges": [30.0, 50.0],
                "fractions": [0.2, 0.5, 0.3],
                "missing": 0.1,
                "min": 18,
                "max": 90,
            },
            "constant": {"edges": [], "fractions": [1.0], "missing": 0.0, "min": 1, "max": 1},
        },
        "categorical": {"plan": {"fractions": {"b": 0.3, "a": 0.5, "__missing__": 0.2}}},
        "score": {"edges": [0.0, 0.5, 1.0], "fractions": [0.7, 0.3]},
    }
    reference = Reference.from_profile("v3", document, 0.4, {})
    assert reference.features == ("age", "plan")
    assert reference.numeric["age"].bins == 3
    assert (reference.numeric["age"].low, reference.numeric["age"].high) == (18.0, 90.0)
    plan = reference.categorical["plan"]
    assert plan.categories == ("a", "b")
    assert plan.fractions == pytest.approx((0.625, 0.375))
    assert plan.missing == pytest.approx(0.2)


def test_reference_of_telco_has_two_bins_per_boolean_and_every_vocabulary(
    reference: Reference, train: pl.DataFrame
) -> None:
    for name in BOOLEANS:
        assert reference.numeric[name].edges == (0.5,)
    for name, ref in reference.categorical.items():
        assert set(ref.categories) == set(train.get_column(name).drop_nulls().unique())
    for ref in [*reference.numeric.values(), *reference.categorical.values()]:
        assert sum(ref.fractions) == pytest.approx(1.0)


def test_profile_of_the_training_rows_reproduces_the_reference(
    reference: Reference, train: pl.DataFrame
) -> None:
    profile = _profile(train, reference)
    for name, ref in {**reference.numeric, **reference.categorical}.items():
        counts = profile.features[name]
        assert counts.counts / counts.present == pytest.approx(ref.fractions, abs=1e-12), name
        assert counts.outside == 0
        assert counts.unknown_values == {}


# build_profile: counts, missing, outside.


def test_numeric_counts_per_bin_match_a_direct_count(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window, reference)
    for name, ref in reference.numeric.items():
        bounds = [-np.inf, *ref.edges, np.inf]
        column = pl.col(name).cast(pl.Float64)
        direct = window.select(
            ((column >= low) & (column < high)).sum().alias(str(i))
            for i, (low, high) in enumerate(itertools.pairwise(bounds))
        )
        assert profile.features[name].counts.tolist() == list(direct.row(0)), name
        assert profile.features[name].missing == window.get_column(name).null_count(), name


def test_booleans_land_in_two_bins(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window, reference)
    for name in BOOLEANS:
        column = window.get_column(name)
        falses, trues = int((~column).sum()), int(column.sum())
        assert profile.features[name].counts.tolist() == [falses, trues], name
        assert profile.features[name].missing == column.null_count()


def test_values_beyond_the_training_range_are_outside(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window, reference)
    for name in ("monthly_charges", "total_charges", "tenure"):
        ref, column = reference.numeric[name], window.get_column(name)
        beyond = int(((column < ref.low) | (column > ref.high)).sum())
        assert profile.features[name].outside == beyond, name
        assert profile.features[name].present == column.drop_nulls().len(), name
    assert profile.features["monthly_charges"].outside > 0
    assert profile.features["total_charges"].outside > 0


def test_unseen_categories_are_outside_and_named(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window, reference)
    for name, ref in reference.categorical.items():
        column = window.get_column(name)
        unknown = column.drop_nulls().filter(~column.drop_nulls().is_in(ref.categories))
        named = dict(unknown.value_counts().iter_rows())
        counts = profile.features[name]
        assert counts.counts.tolist() == [int((column == c).sum()) for c in ref.categories], name
        assert counts.missing == column.null_count(), name
        assert counts.outside == unknown.len(), name
        assert counts.unknown_values == named, name
    assert set(profile.features["payment_method"].unknown_values) == {"Cash", "Bitcoin"}
    assert set(profile.features["contract"].unknown_values) == {"Weekly"}


def test_a_column_the_window_lacks_is_missing_throughout(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window.drop("tenure", "gender"), reference)
    for name in ("tenure", "gender"):
        assert profile.features[name].missing == window.height
        assert profile.features[name].present == 0


def test_scores_and_decisions_are_counted(reference: Reference, window: pl.DataFrame) -> None:
    scores = _scores(window, 3)
    decisions = (scores >= 0.5).astype(np.int64)
    profile = build_profile(window, scores, decisions, reference)
    fine, _ = np.histogram(scores, bins=np.linspace(0, 1, 1001))
    assert profile.rows == window.height
    assert profile.scores.tolist() == fine.tolist()
    assert profile.decisions.tolist() == [int((decisions == 0).sum()), int(decisions.sum())]
    assert profile.decided_sum == pytest.approx([scores[decisions == 0].sum(), scores[decisions == 1].sum()])


def test_each_slice_counts_exactly_its_own_rows(reference: Reference, window: pl.DataFrame) -> None:
    every_fifth = pl.int_range(pl.len()) % 5 == 0
    gappy = window.with_columns(  # missing values form a slice of their own
        pl.when(every_fifth).then(None).otherwise(pl.col("contract")).alias("contract"),
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("tenure")).alias("tenure"),
    )
    scores = _scores(gappy, 4)
    decisions = (scores >= 0.4).astype(np.int64)
    slices = {"contract": None, "tenure": [12.0, 24.0, 48.0], "senior_citizen": None}
    profile = build_profile(gappy, scores, decisions, reference, slices)
    expected = {}
    for column, edges in slices.items():
        labels, order = slice_labels(gappy.get_column(column), edges)
        for label in order:
            if (labels == label).any():
                expected[f"{column}={label}"] = ScoreCounts.of(
                    scores[labels == label], decisions[labels == label]
                )
    assert list(profile.slices) == list(expected)
    assert {"contract=missing", "tenure=missing"} <= profile.slices.keys()
    for key, counts in expected.items():
        got = profile.slices[key]
        assert got.scores.tolist() == counts.scores.tolist(), key
        assert got.decisions.tolist() == counts.decisions.tolist(), key
        assert got.decided_sum.tolist() == counts.decided_sum.tolist(), key  # the same sums, bit for bit


# Profiles add up and round-trip.


def _assert_same(actual: Profile, expected: Profile) -> None:
    assert actual.rows == expected.rows
    assert actual.features.keys() == expected.features.keys()
    for name, counts in expected.features.items():
        got = actual.features[name]
        assert got.counts.tolist() == counts.counts.tolist(), name
        assert (got.missing, got.outside) == (counts.missing, counts.outside), name
        assert got.unknown_values == counts.unknown_values, name
    assert actual.scores.tolist() == expected.scores.tolist()
    assert actual.decisions.tolist() == expected.decisions.tolist()


@pytest.mark.parametrize("parts", [2, 5])
def test_the_profile_of_a_window_is_the_sum_of_its_parts(
    reference: Reference, window: pl.DataFrame, parts: int
) -> None:
    scores = _scores(window, 4)
    decisions = (scores >= 0.5).astype(np.int64)
    slices = {"contract": None, "tenure": [12.0, 24.0, 48.0]}
    whole = build_profile(window, scores, decisions, reference, slices)
    order = np.random.default_rng([SEED, parts]).permutation(window.height)
    pieces = [
        build_profile(window[rows], scores[rows], decisions[rows], reference, slices)
        for rows in np.array_split(order, parts)
    ]
    summed = total(pieces, reference)
    _assert_same(summed, whole)
    assert summed.decided_sum == pytest.approx(whole.decided_sum, rel=1e-12)
    assert summed.slices.keys() == whole.slices.keys()
    for key, counts in whole.slices.items():
        assert summed.slices[key].scores.tolist() == counts.scores.tolist(), key
        assert summed.slices[key].decisions.tolist() == counts.decisions.tolist(), key
    month_to_month = window.get_column("contract") == "Month-to-month"
    assert whole.slices["contract=Month-to-month"].decisions.sum() == month_to_month.sum()
    tenure_bands = [
        counts.decisions.sum() for key, counts in whole.slices.items() if key.startswith("tenure=")
    ]
    assert sum(tenure_bands) == window.height
    added = pieces[0]
    for piece in pieces[1:]:
        added = added + piece
    _assert_same(added, whole)


def test_the_total_of_no_profiles_is_empty(reference: Reference) -> None:
    empty = total([], reference)
    assert empty.rows == 0
    assert set(empty.features) == set(reference.features)
    assert all(f.present == f.missing == f.outside == 0 for f in empty.features.values())
    assert empty.scores.sum() == empty.decisions.sum() == 0


def test_profiles_round_trip_through_json(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window, reference)
    again = Profile.from_json(json.loads(json.dumps(profile.to_json())))
    _assert_same(again, profile)
    assert again.decided_sum.tolist() == profile.decided_sum.tolist()
    assert again.to_json() == profile.to_json()


def _encoded(frame: pl.DataFrame, features: FeatureSpec) -> Encoded:
    matrix = transform(frame, features)
    values = {name: matrix[:, index] for index, name in enumerate(features.input_columns)}
    return Encoded(values, {c.name: c.vocabulary for c in features.categorical})


@pytest.mark.parametrize("variant", ["window", "nan", "narrow reference"])
def test_the_feature_matrix_gives_the_same_profile_as_the_columns(
    reference: Reference, train: pl.DataFrame, window: pl.DataFrame, spec: DatasetSpec, variant: str
) -> None:
    frame = window
    if variant == "nan":  # a NaN is missing to the profile and filled in the matrix: the columns decide
        every_ninth = pl.int_range(pl.len()) % 9 == 0
        nan = pl.when(every_ninth).then(float("nan")).otherwise(pl.col("total_charges"))
        frame = window.with_columns(nan.alias("total_charges"))
    if variant == "narrow reference":  # a category the model knows but the reference never saw
        contract = reference.categorical["contract"]
        narrow = dataclasses.replace(contract, categories=contract.categories[:2], fractions=(0.5, 0.5))
        reference = dataclasses.replace(reference, categorical={**reference.categorical, "contract": narrow})
    scores = _scores(frame, 5)
    decisions = (scores >= 0.5).astype(np.int64)
    slices = {"contract": None, "tenure": [12.0, 24.0, 48.0], "partner": None}
    encoded = _encoded(frame, fit_features(train, spec))
    fast = build_profile(frame, scores, decisions, reference, slices, encoded)
    plain = build_profile(frame, scores, decisions, reference, slices)
    assert fast.to_json() == plain.to_json()
    assert list(fast.slices) == list(plain.slices)
    assert fast.features["contract"].outside > 0
    if variant == "narrow reference":
        assert "Two year" in fast.features["contract"].unknown_values


# Drift.


@pytest.mark.parametrize("seed", [2, 3])
def test_an_undrifted_window_does_not_drift(reference: Reference, spec: DatasetSpec, seed: int) -> None:
    settings = DriftSettings()
    report = drift_report(_profile(_canonical(5000, seed, spec), reference), reference, settings)
    assert len(report["drifted_features"]) <= 1
    assert report["share"] <= settings.share
    assert not report["drifted"]
    assert not report["score"]["drifted"]
    methods = {f["feature"]: f["method"] for f in report["features"]}
    assert methods == {name: "psi" for name in reference.numeric} | {
        name: "js" for name in reference.categorical
    }


def test_a_drifted_window_flags_the_shifted_features(reference: Reference, spec: DatasetSpec) -> None:
    settings = DriftSettings()
    report = drift_report(_profile(_canonical(5000, 4, spec, drift=0.6), reference), reference, settings)
    assert {"contract", "internet_service", "monthly_charges"} <= set(report["drifted_features"])
    assert report["share"] > settings.share
    assert report["drifted"]
    assert "gender" not in report["drifted_features"]


def test_feature_distances_compare_reference_shares_with_window_counts(
    reference: Reference, window: pl.DataFrame
) -> None:
    profile = _profile(window, reference)
    features = {f["feature"]: f for f in drift_report(profile, reference, DriftSettings())["features"]}
    tenure = profile.features["tenure"].counts
    assert features["tenure"]["psi"] == pytest.approx(
        stats.psi(reference.numeric["tenure"].fractions, tenure)
    )
    assert features["tenure"]["rows"] == tenure.sum()
    contract = profile.features["contract"]
    shares = [*reference.categorical["contract"].fractions, 0.0]
    counts = [*contract.counts, contract.outside]  # unseen categories are one more bin
    assert features["contract"]["js"] == pytest.approx(stats.js_distance(shares, counts))
    assert features["contract"]["rows"] == sum(counts)


@pytest.mark.parametrize("small_window", [999, 1000])
def test_windows_up_to_small_window_rows_use_chi_square(
    reference: Reference, spec: DatasetSpec, small_window: int
) -> None:
    frame = _canonical(1000, 5, spec)
    settings = DriftSettings(small_window=small_window)
    report = drift_report(_profile(frame, reference), reference, settings)
    for feature in report["features"]:
        small = feature["rows"] <= small_window
        large = "psi" if feature["type"] == "numeric" else "js"
        assert feature["method"] == ("chi2" if small else large), feature["feature"]
        if small:
            assert feature["threshold"] == settings.p_value
            assert feature["drifted"] == (feature["value"] < settings.p_value)
    assert {f["method"] for f in report["features"]} == (
        {"chi2"} if small_window == 1000 else {"chi2", "psi", "js"}
    )


def test_chi_square_catches_drift_in_a_small_window(reference: Reference, spec: DatasetSpec) -> None:
    report = drift_report(
        _profile(_canonical(300, 6, spec, drift=0.6), reference), reference, DriftSettings()
    )
    contract = next(f for f in report["features"] if f["feature"] == "contract")
    assert contract["method"] == "chi2"
    assert contract["drifted"]
    assert "contract" in report["drifted_features"]


@pytest.mark.parametrize("method", ["psi", "js", "chi2"])
def test_a_method_setting_forces_that_method(reference: Reference, spec: DatasetSpec, method: str) -> None:
    for rows in (200, 5000):
        settings = DriftSettings(method=method)
        report = drift_report(_profile(_canonical(rows, 7, spec), reference), reference, settings)
        for feature in report["features"]:
            assert feature["method"] == method
            if method != "chi2":
                assert feature["value"] == feature[method]
                assert feature["drifted"] == (feature["value"] > feature["threshold"])


def test_learned_thresholds_rise_above_the_fixed_ones_on_small_windows(
    reference: Reference, spec: DatasetSpec
) -> None:
    profile = _profile(_canonical(100, 8, spec), reference)
    raised = {  # where 100 rows' 99% noise clearly exceeds the fixed threshold
        "psi": {"tenure", "monthly_charges", "total_charges"},
        "js": {"tenure", "monthly_charges", "contract", "internet_service", "payment_method"},
    }
    for method in ("psi", "js"):
        learned = drift_report(profile, reference, DriftSettings(method=method, learned=True))
        fixed = drift_report(profile, reference, DriftSettings(method=method, learned=False))
        fixed_threshold = getattr(DriftSettings(), method)
        for a, b in zip(learned["features"], fixed["features"], strict=True):
            assert b["threshold"] == fixed_threshold
            assert a["threshold"] >= fixed_threshold
            if a["feature"] in raised[method]:
                assert a["threshold"] > fixed_threshold, (method, a["feature"])
    psi_report = drift_report(profile, reference, DriftSettings(method="psi"))
    tenure = next(f for f in psi_report["features"] if f["feature"] == "tenure")
    bins = reference.numeric["tenure"].bins
    floor = scipy_stats.chi2.ppf(0.99, bins - 1) * (1 / tenure["rows"] + 1 / reference.rows)
    assert tenure["threshold"] == pytest.approx(floor)


def test_learned_thresholds_stay_fixed_on_large_windows(reference: Reference, spec: DatasetSpec) -> None:
    profile = _profile(_canonical(5000, 9, spec), reference)
    report = drift_report(profile, reference, DriftSettings(learned=True))
    settings = DriftSettings()
    for feature in report["features"]:
        assert feature["threshold"] == (settings.psi if feature["type"] == "numeric" else settings.js)


NOISE_REFERENCE = {
    "rows": 20_000,
    "numeric": {"tenure": {"edges": [12.0, 24.0, 36.0, 48.0], "fractions": [0.2] * 5, "min": 0, "max": 72}},
    "categorical": {
        "contract": {"fractions": {"Month-to-month": 0.55, "One year": 0.21, "Two year": 0.24}},
        "gender": {"fractions": {"Female": 0.5, "Male": 0.5}},
    },
    "score": {"edges": [0.0, 0.5, 1.0], "fractions": [0.5, 0.5]},
}


@pytest.mark.parametrize("method", ["psi", "js"])
@pytest.mark.parametrize("feature", ["tenure", "contract", "gender"])
def test_learned_thresholds_let_about_one_undrifted_window_in_100_through(method: str, feature: str) -> None:
    """Windows drawn from the reference itself drift only by noise: the learned 99% threshold
    (with a negligible fixed one) must flag about 1% of them, for categorical features too."""
    reference = Reference.from_profile("v", NOISE_REFERENCE, 0.5, {})
    shares = dict(reference.numeric | reference.categorical)[feature].fractions
    settings = DriftSettings(method=method, learned=True, psi=1e-9, js=1e-9)
    rng = np.random.default_rng([SEED, len(shares)])
    draws, rows = 4000, 500
    flagged = 0
    for counts in rng.multinomial(rows, shares, size=draws):
        features = {feature: FeatureCounts(counts.astype(np.int64))}
        window = Profile(rows, features, np.zeros(1000, np.int64), np.array([rows, 0]), np.zeros(2))
        flagged += drift_report(window, reference, settings)["features"][0]["drifted"]
    assert 0.005 <= flagged / draws <= 0.025


def test_score_drift_is_the_psi_of_the_reference_score_bins(
    reference: Reference, window: pl.DataFrame
) -> None:
    scores = _scores(window, 10)
    decisions = (scores >= 0.5).astype(np.int64)
    settings = DriftSettings()
    same = score_drift(build_profile(window, scores, decisions, reference), reference, settings)
    binned, _ = np.histogram(scores, bins=reference.score_edges)
    assert same["value"] == pytest.approx(stats.psi(reference.score_fractions, binned), rel=1e-9)
    assert same["mean"] == pytest.approx(scores.mean(), abs=1e-3)
    assert same["positive_rate"] == pytest.approx(decisions.mean())
    assert not same["drifted"]
    shifted = score_drift(build_profile(window, scores**0.3, decisions, reference), reference, settings)
    assert shifted["drifted"]
    assert shifted["value"] > same["value"]


def test_an_empty_window_has_no_drift(reference: Reference, window: pl.DataFrame) -> None:
    profile = _profile(window.head(0), reference)
    report = drift_report(profile, reference, DriftSettings())
    assert report["share"] is None  # nothing to judge: neither drifted nor clear
    assert not report["drifted"]
    assert all(f["value"] is None and not f["drifted"] for f in report["features"])
    assert report["score"]["value"] is None


# Data quality.


def test_quality_report_rates_missing_out_of_range_and_unknown(
    reference: Reference, window: pl.DataFrame
) -> None:
    report = quality_report(_profile(window, reference), reference)
    rows = window.height
    assert report["rows"] == rows
    expected_missing = {
        name: window.get_column(name).null_count() / rows
        for name in reference.features
        if window.get_column(name).null_count()
    }
    assert report["missing"] == pytest.approx(expected_missing)
    assert set(report["missing"]) == {"tenure", "partner", "contract", "total_charges"}
    assert report["reference_missing"]["total_charges"] == pytest.approx(
        reference.numeric["total_charges"].missing
    )
    charges = window.get_column("monthly_charges")
    assert report["out_of_range"]["monthly_charges"] == pytest.approx(
        int((charges > reference.numeric["monthly_charges"].high).sum()) / rows
    )
    assert set(report["unknown_category"]) == {"contract", "payment_method"}
    assert set(report["out_of_range"]) <= set(reference.numeric)
    payment = window.get_column("payment_method")
    assert report["unknown_category"]["payment_method"] == pytest.approx(
        int(payment.is_in(["Cash", "Bitcoin"]).sum()) / rows
    )
    assert set(report["unknown_values"]) == {"contract", "payment_method"}
