"""One exception hierarchy for all of shoal.

Expected outcomes (a pod that does not fit a node, a probe that fails) are returned as data;
these exceptions are for failures. Each boundary translates them: the API server into an HTTP
status with a Kubernetes ``Status`` body, the CLI into one readable line and exit code 1.

::

    ShoalError
     ├── APIStatusError            an error that maps to a Kubernetes Status (has .code, .reason)
     │    ├── BadRequestError      400 malformed request (bad JSON, bad selector, wrong kind)
     │    ├── NotFoundError        404 the object does not exist
     │    ├── AlreadyExistsError   409 create of a name that is taken
     │    ├── ConflictError        409 stale resourceVersion (compare-and-swap lost)
     │    ├── GoneError            410 watch from a revision older than the kept history
     │    ├── InvalidError         422 field-level validation errors (.causes)
     │    └── UnavailableError     503 the store or server cannot serve right now
     ├── ConfigError               a user file (manifest, compose file) is wrong; names file/doc
     ├── ServerUnreachableError    the client could not reach the API server
     ├── DriverError               a runtime driver failed to start/stop/inspect a container
 ├── NetworkError              the network data plane (ip, nft, tc, CNI) refused a change
     └── TemporaryError            retry after .delay seconds (controllers, agent)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One validation failure: where (``spec.containers[0].image``), what kind, and why.

    ``reason`` uses Kubernetes' CauseType names (FieldValueRequired, FieldValueInvalid, ...).
    """

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


class APIStatusError(ShoalError):
    """An error with a Kubernetes ``Status`` shape. Inspect ``code`` and ``reason``."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        causes: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.causes: list[FieldError] = list(causes or [])

    def to_status(self) -> dict[str, Any]:
        """The Kubernetes ``Status`` object for this error."""
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_cause() for c in self.causes]
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body

    @classmethod
    def from_status(cls, body: dict[str, Any], code: int) -> APIStatusError:
        """Rebuild the matching exception from a ``Status`` body (used by the client)."""
        details = body.get("details") or {}
        causes = [
            FieldError(c.get("field", ""), c.get("reason", ""), c.get("message", ""))
            for c in details.get("causes") or []
        ]
        reason = body.get("reason", "")
        klass: type[APIStatusError] = _BY_REASON.get(reason) or _BY_CODE.get(code) or APIStatusError
        err = klass(
            body.get("message", f"HTTP {code}"),
            kind=details.get("kind"),
            name=details.get("name"),
            causes=causes,
        )
        err.code = code
        if reason:
            err.reason = reason
        return err


class BadRequestError(APIStatusError):
    """The request itself is malformed. Fix the request; retrying will not help."""

    code = 400
    reason = "BadRequest"


class NotFoundError(APIStatusError):
    """The object does not exist (or was deleted meanwhile)."""

    code = 404
    reason = "NotFound"


class AlreadyExistsError(APIStatusError):
    """A create named an object that exists. Use update, or pick another name."""

    code = 409
    reason = "AlreadyExists"


class ConflictError(APIStatusError):
    """The object changed since it was read. Re-read it, re-apply the change, retry."""

    code = 409
    reason = "Conflict"


class GoneError(APIStatusError):
    """The requested revision is older than the kept history. List again, then watch."""

    code = 410
    reason = "Expired"


class InvalidError(APIStatusError):
    """The object failed validation. ``causes`` names every field at fault."""

    code = 422
    reason = "Invalid"


class UnavailableError(APIStatusError):
    """The server or its store cannot serve now. Retry with back-off."""

    code = 503
    reason = "ServiceUnavailable"


_BY_REASON: dict[str, type[APIStatusError]] = {
    "BadRequest": BadRequestError,
    "NotFound": NotFoundError,
    "AlreadyExists": AlreadyExistsError,
    "Conflict": ConflictError,
    "Expired": GoneError,
    "Gone": GoneError,
    "Invalid": InvalidError,
    "ServiceUnavailable": UnavailableError,
}
_BY_CODE: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    404: NotFoundError,
    410: GoneError,
    422: InvalidError,
    503: UnavailableError,
}


class ConfigError(ShoalError):
    """A user-supplied file is wrong. The message names the file, document and field."""


class ServerUnreachableError(ShoalError):
    """The API server did not answer. Check ``--server``/``SHOAL_SERVER`` and that it runs."""


class DriverError(ShoalError):
    """A runtime driver could not do what was asked (start, stop, inspect a container)."""


class NetworkError(ShoalError):
    """A data-plane command (``ip``, ``nft``, ``tc``, a CNI plugin) failed; the message names
    the command and carries its stderr."""


class TemporaryError(ShoalError):
    """A failure that should clear up by itself: retry after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay
