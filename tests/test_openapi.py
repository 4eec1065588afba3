"""The OpenAPI document says what the server really does: bearer auth, envelope errors, no 422."""

from __future__ import annotations

import json

import pytest
from fastapi import APIRouter, Depends, FastAPI

from conftest import ERROR_KEYS, assert_error
from sorakit.server import openapi
from sorakit.server.deps import current_user

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.fixture
def api(make_api):
    return make_api(workers=0)


@pytest.fixture
def document(api) -> dict:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_bearer_scheme_applies_to_token_routes_only(document):
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"]}
    paths = document["paths"]
    assert paths["/backend/nf/create"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert "security" not in paths["/api/auth/session"]["get"]
    assert "security" not in paths["/assets/{gen_id}/{filename}"]["get"]
    for path, operations in paths.items():
        if path.startswith("/backend/"):
            assert all(op.get("security") == [{"bearerAuth": []}] for op in operations.values()), path


def test_no_422_anywhere(document):
    assert '"422"' not in json.dumps(document)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_create_documents_its_errors_with_the_envelope(document):
    responses = document["paths"]["/backend/nf/create"]["post"]["responses"]
    for status in ("400", "401", "413", "429", "500", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == ENVELOPE, status
    assert "Retry-After" in responses["429"]["headers"]
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(envelope["properties"]) == {"error", "status"}
    assert set(detail["required"]) == ERROR_KEYS


def test_statuses_follow_the_route(document):
    paths = document["paths"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "500"}
    assert "404" in paths["/backend/nf/tasks/{task_id}/v2"]["get"]["responses"]
    assert "404" not in paths["/backend/nf/check"]["get"]["responses"]
    assert "429" not in paths["/backend/nf/check"]["get"]["responses"]
    asset = paths["/assets/{gen_id}/{filename}"]["get"]["responses"]
    assert "application/xml" in asset["403"]["content"]


def test_operation_ids_are_unique(document):
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_document_is_generated_once(api):
    assert api.app.openapi() is api.app.openapi()


def test_405_names_the_allowed_methods(api):
    response = api.client.put("/backend/nf/create", headers=api.alice, json={"prompt": "x"})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_405_lists_every_route_on_the_url(api):
    # GET and DELETE of a draft are two routes; Starlette alone would name only the first.
    response = api.client.put("/backend/project_y/profile/drafts/gen_x", headers=api.alice)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET"
    response = api.client.post("/assets/gen_x/video.mp4")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


def test_token_routes_are_found_by_their_dependency_not_their_path():
    # A router-level dependency counts too, and a path outside /backend would still be marked.
    app = FastAPI()
    openapi.install(app)
    router = APIRouter(prefix="/extra", dependencies=[Depends(current_user)])
    router.add_api_route("/{item_id}", lambda item_id: {}, methods=["GET"])
    app.include_router(router)
    app.add_api_route("/open", lambda: {}, methods=["GET"])
    paths = app.openapi()["paths"]
    assert paths["/extra/{item_id}"]["get"]["security"] == [{"bearerAuth": []}]
    assert {"401", "404"} <= set(paths["/extra/{item_id}"]["get"]["responses"])
    assert "security" not in paths["/open"]["get"]
