"""GET /model: the model being served."""

from typing import Any

from fastapi import APIRouter

from churn_mlops.serving import answers
from churn_mlops.serving.deps import CurrentModel, PredictKey, RequestModel
from churn_mlops.serving.schemas import ModelPublic

router = APIRouter()


@router.get("/model", response_model=ModelPublic)
async def model(key: PredictKey, served: CurrentModel, customer: RequestModel) -> Any:
    """The model being served, its metrics, threshold and request schema."""
    return answers.description(served, customer.model_json_schema())
