"""The web dashboard: one page on the model server that shows whether the model can be trusted.

`mount` adds its routes to the server's app; it reads the stored monitoring results only, so
the prediction routes neither know nor pay for it.
"""

from churn_mlops.dashboard.routes import Dashboard, mount

__all__ = ["Dashboard", "mount"]
