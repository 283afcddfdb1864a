"""API keys with scopes: ``X-API-Key`` checked against the SHA-256 hashes in the settings.

- **401** when the header is missing or matches no configured key, with
  ``WWW-Authenticate: APIKey``; **403** when the key is known but lacks the route's scope.
- **Hashes only.** The settings hold ``sha256(key)``; the presented key is hashed and compared
  with :func:`secrets.compare_digest` against every configured hash (no early exit), so the
  time taken does not tell how many leading characters matched or which key was close.
"""

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from liqrisk.serve.settings import ApiKey, Scope, ServeSettings

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key; each route needs one of its scopes.",
)


async def get_settings(request: Request) -> ServeSettings:
    """The app's settings (``create_app`` stores them); override in tests if needed.

    The dependencies here are ``async``: they never block, and FastAPI runs a plain ``def``
    dependency in the thread pool, a thread hop per dependency per request."""
    return request.app.state.settings


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]


def authenticate(presented: str | None, keys: list[ApiKey]) -> ApiKey | None:
    """The configured key whose hash matches ``presented``, or None."""
    if not presented:
        return None
    digest = hashlib.sha256(presented.encode()).hexdigest().encode()
    found = None
    for key in keys:  # every key is compared, match or not
        if secrets.compare_digest(digest, key.key_sha256.encode()):
            found = key
    return found


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that lets a request through only with a key holding ``scope``.

    Examples
    --------
    >>> @app.post("/v1/score", dependencies=[Depends(require(Scope.SCORE))])  # doctest: +SKIP
    """

    async def check(
        settings: SettingsDep,
        presented: Annotated[str | None, Depends(api_key_header)],
    ) -> ApiKey:
        key = authenticate(presented, settings.api_keys)
        if key is None:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail=f"missing or unknown API key (header {API_KEY_HEADER})",
                headers={"WWW-Authenticate": "APIKey"},
            )
        if scope not in key.scopes:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"API key {key.name!r} lacks the scope {scope.value!r}",
            )
        return key

    check.__name__ = f"require_{scope.name.lower()}"
    return check
