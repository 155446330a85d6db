"""Features: one transform, fitted once on training data, shared by training and every scorer."""

from churn_mlops.features.spec import FeatureSpec, fit_features
from churn_mlops.features.transform import Columns, transform

__all__ = ["Columns", "FeatureSpec", "fit_features", "transform"]
