"""POST /admin/reload: load the champion again, audited."""

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from churn_mlops.errors import ChurnError
from churn_mlops.runtime import freeze_heap
from churn_mlops.serving.deps import AdminKey, MetricsDep, ServicesDep
from churn_mlops.serving.keys import ApiKey

audit = logging.getLogger("churn_mlops.serving.audit")
router = APIRouter()


@router.post("/admin/reload")
async def reload(
    request: Request, key: AdminKey, services: ServicesDep, metrics: MetricsDep
) -> dict[str, Any]:
    """Load the champion again; on failure the current model keeps serving."""
    holder = services.holder
    try:
        old, new = await holder.reload()
    except ChurnError as exc:
        _audit(key, "reload", request, outcome="refused", detail=str(exc))
        raise HTTPException(409, f"reload refused, still serving {holder.version_or_none()}: {exc}") from exc
    metrics.set_model(new, old)
    freeze_heap()
    _audit(key, "reload", request, outcome="ok", previous=old, version=new)
    return {"previous": old, "version": new}


def _audit(key: ApiKey, action: str, request: Request, **fields: Any) -> None:
    audit.info(
        action, extra={"action": action, "key": key.name, "request_id": request.state.request_id, **fields}
    )
