"""churn-mlops: a production ML system for customer churn, from data to dashboard."""

__version__ = "0.1.0"
