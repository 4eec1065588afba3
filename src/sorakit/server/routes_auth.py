"""``/api/auth/*``: password sign-in, sign-out, and the session the web app refreshes
(PROTOCOL section 1). The logic is in ``sessions.py``; this module speaks HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..protocol import errors
from . import sessions
from .bodies import parse_json, validate
from .deps import get_services
from .openapi import ENVELOPE_REF
from .services import Services

router = APIRouter(prefix="/api/auth", tags=["auth"])
FORM = "application/x-www-form-urlencoded"


class SignIn(BaseModel):
    # extra keys ignored: NextAuth's credential forms also send csrfToken, callbackUrl and json
    model_config = ConfigDict(extra="ignore")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}}


CROSS_SITE = {403: _error("The request came from a page of another site (`cross_site_request`).")}
SIGNIN_ERRORS = {
    **CROSS_SITE,
    401: _error("Wrong username or password (`invalid_credentials`)."),
    429: {**_error("Too many failed sign-ins for this name or address (`too_many_signin_attempts`)."),
          "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}},
}
SIGNIN_BODY = {"requestBody": {"required": True, "content": {
    media: {"schema": SignIn.model_json_schema()} for media in ("application/json", FORM)}}}


def _form(data: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(data.decode("utf-8"), keep_blank_values=True, max_num_fields=100,
                              errors="strict"))
    except (UnicodeDecodeError, ValueError):
        raise errors.invalid_request("The request body is not a valid form.") from None


async def _credentials(request: Request) -> SignIn:
    data = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return validate(SignIn, _form(data) if media == FORM else parse_json(data))


def same_site(request: Request, services: Services = Depends(get_services)) -> None:
    sessions.check_origin(request, services.settings)


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


@router.post("/signin", dependencies=[Depends(same_site)], openapi_extra=SIGNIN_BODY,
             responses=SIGNIN_ERRORS)
def signin(request: Request, response: Response, credentials: SignIn = Depends(_credentials),
           services: Services = Depends(get_services)) -> dict:
    """Sign in with a password (JSON or a form); the session cookie comes back HttpOnly."""
    address = sessions.client_address(request, services.settings)
    signed = sessions.sign_in(services, credentials.username, credentials.password, address)
    for old in sessions.cookie_values(request):  # a browser holds one session, not a pile of them
        sessions.sign_out(services, old)
    name, secure = sessions.cookie_for(request, services.settings)
    response.set_cookie(name, signed.cookie, max_age=int(sessions.SESSION_SECONDS), path="/",
                        secure=secure, httponly=True, samesite="lax")
    _no_store(response)
    return {"ok": True, "user": sessions.public_user(signed.user)}


@router.post("/signout", dependencies=[Depends(same_site)], responses=CROSS_SITE)
def signout(request: Request, response: Response, services: Services = Depends(get_services)) -> dict:
    """End the session and revoke its token; answers 200 with or without one."""
    for value in sessions.cookie_values(request):
        sessions.sign_out(services, value)
    chunks = [name for name in request.cookies if name.startswith(sessions.COOKIE_NAMES)]
    for name in sorted({*sessions.COOKIE_NAMES, *chunks}):
        # a __Secure- cookie is only replaced by a Set-Cookie that says Secure too
        response.delete_cookie(name, path="/", secure=name.startswith("__Secure-"), httponly=True,
                               samesite="lax")
    _no_store(response)
    return {"ok": True}


@router.get("/session")
def session(request: Request, response: Response, services: Services = Depends(get_services)) -> dict:
    """The signed-in user, the session's expiry and a bearer token for ``/backend`` (NextAuth's
    shape); ``{}`` with no live session, as NextAuth answers."""
    _no_store(response)
    for value in sessions.cookie_values(request):
        answer = sessions.session_answer(services, value)
        if answer:
            return answer
    return {}
