"""``GET /backend/models``: the model ids a create form may offer, and what runs behind each."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .create import resolve_engine
from .deps import current_user, get_services
from .services import Services

router = APIRouter(prefix="/backend", tags=["models"])


def _ids(services: Services) -> list[str]:
    """sy_8 and sy_ore first (every server runs them), then configured names and aliases."""
    return list(dict.fromkeys(["sy_8", "sy_ore", *services.settings.models]))


@router.get("/models")
def models(_user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """Each id with its engine, whether that engine is a placeholder (the preview engine draws no
    video model's output) and whether it can start from an image."""
    listed = []
    for model in _ids(services):
        name = resolve_engine(services, model)
        engine = services.engines.get(name)
        if engine is not None:  # an id whose engine is missing would only answer 400
            listed.append({"id": model, "engine": name, "placeholder": engine.placeholder,
                           "image_to_video": engine.supports_image})
    return {"models": listed}
