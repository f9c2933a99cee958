"""Bearer-key auth: the key of ``--api-key-file``, and the dependency guarding data routes."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

MEDIA_COOKIE = "pig_api_key"  # the page sets it so that <video> requests carry the key


class ApiKey:
    """The key of ``--api-key-file``, compared in constant time."""

    def __init__(self, key: str) -> None:
        self._expected = key.encode()

    def accepts(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._expected)

    def in_header(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value is ``Bearer <the key>``."""
        scheme, credentials = get_authorization_scheme_param(authorization)
        return scheme.lower() == "bearer" and self.accepts(credentials)


def auth_dependencies(key: ApiKey | None) -> list[Any]:
    """The dependency that guards the data routes, or none without a key."""
    if key is None:
        return []
    bearer = HTTPBearer(auto_error=False, description="the key in --api-key-file")
    cookie = APIKeyCookie(name=MEDIA_COOKIE, auto_error=False,
                          description="the same key, for <video> and <img> elements (media and "
                          "thumbnails only)")

    async def require_key(  # defaults, not Annotated: the closure's names stay unresolved
            request: Request,
            header: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
            cookie_key: str | None = Depends(cookie)) -> None:
        given = header.credentials if header is not None else None
        if given is None and request.url.path.endswith(("/media", "/thumbnail")):
            given = cookie_key
        if not key.accepts(given):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    return [Depends(require_key)]
