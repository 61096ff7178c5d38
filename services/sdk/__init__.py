"""The Taskroute Python client (sync and async, on httpx). See :mod:`services.sdk.client`."""

from services.sdk._core import RetryPolicy
from services.sdk.client import AsyncTaskrouteClient, TaskrouteClient
from services.sdk.errors import (
    AuthenticationError,
    ConflictError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    TaskrouteAPIError,
    TaskrouteConnectionError,
    TaskrouteSDKError,
    ValidationError,
)

__all__ = [
    "AsyncTaskrouteClient",
    "AuthenticationError",
    "ConflictError",
    "GoneError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "TaskrouteAPIError",
    "TaskrouteClient",
    "TaskrouteConnectionError",
    "TaskrouteSDKError",
    "ValidationError",
]
