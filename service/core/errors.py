"""One error root for the whole code base.

Every subclass carries an HTTP ``status``, a machine-readable ``error_code`` and a default
``detail`` (the first line of its docstring), so raising one is enough to answer a client.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Internal error"""

    status: ClassVar[int] = 500
    error_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default = (type(self).__doc__ or "").strip().splitlines()[0]
        self.detail = detail or default
        self.message = message or self.detail
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)


class ConfigError(ServiceError):
    """Invalid configuration"""


class InvalidRequest(ServiceError):
    """Invalid request"""

    status = 400
    error_code = "INVALID_REQUEST"


class JobNotRunnable(ServiceError):
    """Only validation jobs can be run"""

    status = 400
    error_code = "JOB_NOT_RUNNABLE"


class Unauthorized(ServiceError):
    """Invalid or missing API key"""

    status = 401
    error_code = "UNAUTHORIZED"


class JobNotFound(ServiceError):
    """Job not found"""

    status = 404
    error_code = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id} not found", details={"job_id": job_id})


class FeedNotFound(ServiceError):
    """Feed not found"""

    status = 404
    error_code = "FEED_NOT_FOUND"

    def __init__(self, feed_id: str) -> None:
        super().__init__(f"Feed {feed_id} not found", details={"feed_id": feed_id})


class ProductNotFound(ServiceError):
    """Product not found"""

    status = 404
    error_code = "PRODUCT_NOT_FOUND"


class WebhookNotFound(ServiceError):
    """Webhook not found"""

    status = 404
    error_code = "WEBHOOK_NOT_FOUND"


class DeliveryNotFound(ServiceError):
    """Delivery not found"""

    status = 404
    error_code = "DELIVERY_NOT_FOUND"


class RunNotFound(ServiceError):
    """Run not found"""

    status = 404
    error_code = "RUN_NOT_FOUND"


class ChangesExpired(ServiceError):
    """Changes removed by retention"""

    status = 410
    error_code = "CHANGES_EXPIRED"


class ChangesNotRecorded(ServiceError):
    """Changes not recorded"""

    status = 409
    error_code = "CHANGES_NOT_RECORDED"


class ScheduleNotFound(ServiceError):
    """Schedule not found"""

    status = 404
    error_code = "SCHEDULE_NOT_FOUND"


class RouteNotFound(ServiceError):
    """Not found"""

    status = 404
    error_code = "NOT_FOUND"


class MethodNotAllowed(ServiceError):
    """Method not allowed"""

    status = 405
    error_code = "METHOD_NOT_ALLOWED"


class RequestTimeout(ServiceError):
    """The request body stopped arriving"""

    status = 408
    error_code = "REQUEST_TIMEOUT"


class FeedNotReady(ServiceError):
    """The feed has no stored file yet"""

    status = 409
    error_code = "FEED_NOT_READY"


class JobAlreadyActive(ServiceError):
    """Job is already queued or running"""

    status = 409
    error_code = "JOB_ALREADY_ACTIVE"


class JobNotCancellable(ServiceError):
    """Job has already finished and cannot be cancelled"""

    status = 409
    error_code = "JOB_NOT_CANCELLABLE"


class TransitionRefused(ServiceError):
    """A job's state changed under a caller: the guarded transition matched no row, and the
    caller's transaction rolls back with nothing written (store/lifecycle.py)."""

    status = 409
    error_code = "TRANSITION_REFUSED"


class PayloadTooLarge(ServiceError):
    """Payload too large"""

    status = 413
    error_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ServiceError):
    """Unsupported media type"""

    status = 415
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class IdempotencyKeyReused(ServiceError):
    """Idempotency-Key was already used for a different request"""

    status = 422
    error_code = "IDEMPOTENCY_KEY_REUSED"


class RateLimited(ServiceError):
    """Too many requests"""

    status = 429
    error_code = "RATE_LIMITED"


class Unavailable(ServiceError):
    """Service temporarily unavailable"""

    status = 503
    error_code = "UNAVAILABLE"

    @classmethod
    def not_reachable(cls, what: str) -> Unavailable:
        """The 503 for a connection fault of a dependency (``what``: "The database")."""
        return cls(f"{what} is not reachable; try again shortly", headers={"Retry-After": "5"})


class StorageError(ServiceError):
    """Object storage error"""

    status = 502
    error_code = "STORAGE_ERROR"


class JobFailure(ServiceError):
    """A validation run failed for a reason that belongs in the job's ``error``.

    ``error_code`` is per instance here: the codes of feed-format.md (MISSING_COLUMNS, ...).
    """

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code
