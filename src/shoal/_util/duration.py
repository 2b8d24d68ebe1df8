"""Go duration strings ("10s", "1m30s", "500ms", "1.5h"), as Consul's API takes them."""

from __future__ import annotations

import re

from shoal.errors import BadRequestError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``text`` (Go's ``time.ParseDuration`` syntax; a bare number of seconds is
    accepted too, as Consul's config decoder does). Raises BadRequestError naming ``what``
    and the value."""
    value = text.strip()
    if not value:
        raise BadRequestError(f'invalid {what} "{text}": empty')
    sign = 1.0
    if value[0] in "+-":
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == "0":
        return 0.0
    try:
        return sign * float(value)
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            raise BadRequestError(
                f'invalid {what} "{text}": expected a number and a unit (ns, us, ms, s, m, h), '
                'e.g. "10s" or "1m30s"'
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total
