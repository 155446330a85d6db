"""Rollouts on the model server: a challenger in the shadow of the champion, or as a canary.

The rollout in force is a row of `rollouts` (started and ended by `churn rollout`), so every
worker and replica follows it within `poll_seconds`, without a restart. In canary mode a stable
share of customers (by customer id) is answered by the canary model, each answer naming its
version. In shadow mode the champion still answers every request; each answered request's
customers are also handed to a background thread that scores them with the shadow model and
stores its probability beside the champion's (`shadow_predictions`, by request id). The request
never waits for that: handing over is a queue put, and a full queue drops the shadow's score
(counted), never the answer.
"""

from churn_mlops.serving.rollout.canary import Canary, merged_bins, psi
from churn_mlops.serving.rollout.follower import Rollouts
from churn_mlops.serving.rollout.shadow import Shadow
from churn_mlops.serving.rollout.state import (
    CANARY,
    SHADOW,
    ActiveRollout,
    active_rollout,
    roll_back,
    rollout_counts,
    rollouts,
    shadow_predictions,
    store_counts,
)

__all__ = [
    "CANARY",
    "SHADOW",
    "ActiveRollout",
    "Canary",
    "Rollouts",
    "Shadow",
    "active_rollout",
    "merged_bins",
    "psi",
    "roll_back",
    "rollout_counts",
    "rollouts",
    "shadow_predictions",
    "store_counts",
]
