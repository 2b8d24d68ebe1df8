"""Kubernetes resource quantities ("250m", "0.5", "128Mi", "1G", "1e3"), parsed exactly.

Decimal arithmetic throughout: "0.1" CPU is exactly 100 millicores, never 99.99999.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact numeric value of a quantity. Raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"quantity {value!r} is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    text = value.strip()
    m = _RE.match(text)
    if not m:
        raise ValueError(
            f'quantity "{value}" must match the regular expression '
            r"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number, exponent, suffix = m.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - regex already guards
        raise ValueError(f'quantity "{value}" is not a number') from exc
    if exponent:
        return base * (Decimal(10) ** int(exponent[1:]))
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    return base * _DECIMAL[suffix or ""]


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up ("0.1" -> 100, "1" -> 1000, "1u" -> 1)."""
    return int((parse_quantity(value) * 1000).to_integral_value(rounding=ROUND_CEILING))


def memory_bytes(value: str | int | float) -> int:
    """Memory quantity in bytes, rounded up ("128Mi" -> 134217728, "1G" -> 10**9)."""
    return int(parse_quantity(value).to_integral_value(rounding=ROUND_CEILING))


def format_cpu(millis: int) -> str:
    """Millicores as Kubernetes prints them: whole cores when exact, else "250m"."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(n: int) -> str:
    """Bytes in the largest binary unit that divides exactly ("128Mi"), else plain bytes."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def is_quantity(value: object) -> bool:
    try:
        parse_quantity(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True
