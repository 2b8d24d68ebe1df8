"""Field-level validation failures in Kubernetes' wording (``Invalid value: \"x\": ...``)."""

from __future__ import annotations

from shoal.errors import FieldError


def required(path: str) -> FieldError:
    return FieldError(path, "FieldValueRequired", "Required value")


def invalid(path: str, value: object, detail: str) -> FieldError:
    return FieldError(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}")


def unsupported(path: str, value: object, supported: list[str]) -> FieldError:
    vals = ", ".join(f'"{s}"' for s in supported)
    return FieldError(
        path,
        "FieldValueNotSupported",
        f"Unsupported value: {_show(value)}: supported values: {vals}",
    )


def duplicate(path: str, value: object) -> FieldError:
    return FieldError(path, "FieldValueDuplicate", f"Duplicate value: {_show(value)}")


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, "FieldValueForbidden", f"Forbidden: {detail}")


def not_found(path: str, value: object) -> FieldError:
    return FieldError(path, "FieldValueNotFound", f"Not found: {_show(value)}")


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
