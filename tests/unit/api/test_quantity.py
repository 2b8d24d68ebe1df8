from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.api import cpu_millis, format_cpu, format_memory, memory_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Decimal("0.25")),
        ("0.5", Decimal("0.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("100k", Decimal(100_000)),
        ("2", Decimal(2)),
        (".5", Decimal("0.5")),
        (3, Decimal(3)),
        (0.1, Decimal("0.1")),
    ],
)
def test_parse_exact(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_cpu_and_memory_units() -> None:
    assert cpu_millis("250m") == 250
    assert cpu_millis("0.1") == 100
    assert cpu_millis(0.1) == 100
    assert cpu_millis("1") == 1000
    assert cpu_millis("1u") == 1  # rounds up, never to zero
    assert memory_bytes("128Mi") == 134_217_728
    assert memory_bytes("1G") == 1_000_000_000
    assert memory_bytes("1Ki") == 1024


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "5Xi", "12 Mi", "--1", "Mi", True])
def test_rejects_garbage(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)  # type: ignore[arg-type]


def test_format() -> None:
    assert format_cpu(2000) == "2"
    assert format_cpu(250) == "250m"
    assert format_memory(128 * 2**20) == "128Mi"
    assert format_memory(1000) == "1000"


@given(st.integers(min_value=0, max_value=10**9))
def test_millicores_round_trip(m: int) -> None:
    assert cpu_millis(f"{m}m") == m
    assert cpu_millis(format_cpu(m)) == m


@given(st.integers(min_value=0, max_value=2**50))
def test_memory_round_trip(n: int) -> None:
    assert memory_bytes(format_memory(n)) == n
