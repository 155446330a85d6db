"""Synthetic Telco-schema customers with a realistic churn signal, generated in chunks.

Every block of BLOCK_ROWS rows has its own random stream seeded by (seed, block number), so
the output depends only on the seed and the row count, never on how it is written. `drift`
(0 = none, 1 = strong) shifts the customer mix toward month-to-month contracts, fibre and
higher bills, for demonstrating drift monitoring; the churn mechanism itself is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl

BLOCK_ROWS = 65_536
ADDONS = (
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)
ADDON_RATES = (0.37, 0.44, 0.44, 0.37, 0.49, 0.50)
ADDON_PRICES = (5.0, 5.0, 5.0, 5.0, 10.0, 10.0)
PAYMENT_METHODS = ("Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)")
CONTRACTS = ("Month-to-month", "One year", "Two year")
INTERNET = ("DSL", "Fiber optic", "No")


def generate(
    rows: int, *, seed: int = 0, drift: float = 0.0, bad_fraction: float = 0.0
) -> Iterator[pl.DataFrame]:
    """Yield frames of raw Telco-schema customers, BLOCK_ROWS at a time, `rows` in all."""
    for block, start in enumerate(range(0, rows, BLOCK_ROWS)):
        size = min(BLOCK_ROWS, rows - start)
        rng = np.random.default_rng([seed, block])
        frame = customers(rng, size, start=start, seed=seed, drift=drift)
        yield corrupt(frame, rng, bad_fraction) if bad_fraction > 0 else frame


def customers(rng: np.random.Generator, n: int, *, start: int, seed: int, drift: float) -> pl.DataFrame:
    """One block of customers with ids start..start+n-1."""
    contract = _choice(rng, n, CONTRACTS, _shift((0.55, 0.21, 0.24), 0.35 * drift))
    internet = _choice(rng, n, INTERNET, _shift((0.34, 0.44, 0.22), 0.35 * drift, to=1))
    has_internet = internet != "No"
    phone = rng.random(n) < 0.9
    multiple = phone & (rng.random(n) < 0.47)
    addons = [has_internet & (rng.random(n) < rate) for rate in ADDON_RATES]
    tenure = _tenure(rng, contract)
    charges = 20.0 * phone + 5.0 * multiple + np.where(internet == "Fiber optic", 50.0, 0.0)
    charges += np.where(internet == "DSL", 25.0, 0.0) + sum(
        p * a for p, a in zip(ADDON_PRICES, addons, strict=True)
    )
    charges = np.clip((charges + rng.normal(0, 2.0, n)) * (1 + 0.25 * drift), 18.25, 150.0).round(2)
    total = (tenure * charges * rng.uniform(0.95, 1.05, n)).round(2)
    senior = rng.random(n) < 0.16
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(partner, 0.5, 0.1)
    paperless = rng.random(n) < 0.59
    payment = _choice(rng, n, PAYMENT_METHODS, (0.34, 0.23, 0.22, 0.21))
    logit = (
        -2.3
        + 1.5 * (contract == "Month-to-month")
        - 1.2 * (contract == "Two year")
        - 0.035 * tenure
        + 0.9 * (internet == "Fiber optic")
        - 0.6 * ~has_internet
        + 0.45 * (payment == "Electronic check")
        + 0.3 * senior
        + 0.3 * paperless
        - 0.2 * dependents
        + 0.45 * (has_internet & ~addons[0])
        + 0.45 * (has_internet & ~addons[3])
        + 0.008 * (charges - 65)
    )
    churn = rng.random(n) < 1 / (1 + np.exp(-logit))
    columns: dict[str, pl.Expr | pl.Series] = {
        "customerID": pl.format(
            "{}-{}", pl.lit(f"S{seed}"), pl.int_range(start, start + n).cast(pl.String).str.zfill(9)
        ),
        "gender": pl.Series(np.where(rng.random(n) < 0.5, "Female", "Male")),
        "SeniorCitizen": pl.Series(senior.astype(np.int64)),
        "Partner": _yes_no(partner),
        "Dependents": _yes_no(dependents),
        "tenure": pl.Series(tenure),
        "PhoneService": _yes_no(phone),
        "MultipleLines": pl.Series(np.where(phone, np.where(multiple, "Yes", "No"), "No phone service")),
        "InternetService": pl.Series(internet),
        **{name: _addon(a, has_internet) for name, a in zip(ADDONS, addons, strict=True)},
        "Contract": pl.Series(contract),
        "PaperlessBilling": _yes_no(paperless),
        "PaymentMethod": pl.Series(payment),
        "MonthlyCharges": pl.Series(charges),
        "TotalCharges": pl.Series(np.where(tenure == 0, np.nan, total)).fill_nan(None),
        "Churn": _yes_no(churn),
    }
    return pl.select(*(value.alias(name) for name, value in columns.items()))


def corrupt(frame: pl.DataFrame, rng: np.random.Generator, fraction: float) -> pl.DataFrame:
    """Break about `fraction` of the rows in ways validation must catch; all columns become text."""
    broken = rng.random(frame.height) < fraction
    kind = rng.integers(0, 4, frame.height)
    text = frame.with_columns(pl.all().cast(pl.String))

    def damage(column: str, which: int, value: str) -> pl.Expr:
        hit = pl.Series(broken & (kind == which))
        return pl.when(hit).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)

    return text.with_columns(
        damage("tenure", 0, "twelve"),
        damage("MonthlyCharges", 1, "-20"),
        damage("Contract", 2, "Weekly"),
        damage("customerID", 3, ""),
    )


def _choice(rng: np.random.Generator, n: int, values: tuple[str, ...], p: tuple[float, ...]) -> np.ndarray:
    return np.asarray(values)[rng.choice(len(values), size=n, p=p)]


def _shift(p: tuple[float, ...], amount: float, to: int = 0) -> tuple[float, ...]:
    """Move `amount` of probability mass onto category `to`, proportionally from the others."""
    rest = 1 - p[to]
    moved = min(amount, rest)
    return tuple(q + moved if i == to else q * (1 - moved / rest) for i, q in enumerate(p))


def _tenure(rng: np.random.Generator, contract: np.ndarray) -> np.ndarray:
    scale = np.select([contract == "Month-to-month", contract == "One year"], [17.0, 38.0], 60.0)
    months = np.where(contract == "Month-to-month", rng.exponential(scale), rng.normal(scale, 15.0))
    return np.clip(np.rint(months), 0, 72).astype(np.int64)


def _yes_no(flags: np.ndarray) -> pl.Series:
    return pl.Series(np.where(flags, "Yes", "No"))


def _addon(flags: np.ndarray, has_internet: np.ndarray) -> pl.Series:
    return pl.Series(np.where(has_internet, np.where(flags, "Yes", "No"), "No internet service"))
