"""What users may type for kinds and durations."""

from __future__ import annotations

import pytest
import typer

from shoal.cli._args import kind_and_names, kind_or_fail, parse_duration


@pytest.mark.parametrize(
    ("typed", "kind"),
    [
        ("po", "Pod"), ("pod", "Pod"), ("pods", "Pod"), ("Pod", "Pod"),
        ("deploy", "Deployment"), ("deployments", "Deployment"), ("deployments.apps", "Deployment"),
        ("svc", "Service"), ("no", "Node"), ("ep", "Endpoints"), ("ns", "Namespace"),
        ("rs", "ReplicaSet"), ("ev", "Event"), ("events", "Event"),
    ],
)  # fmt: skip
def test_short_plural_singular_and_kind_names(typed: str, kind: str) -> None:
    assert kind_or_fail(typed).kind == kind


def test_unknown_kind_exits_with_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        kind_or_fail("frobs")
    assert exit_info.value.exit_code == 1
    assert 'the server doesn\'t have a resource type "frobs"' in capsys.readouterr().err


def test_kind_slash_name_form() -> None:
    pairs = kind_and_names("deploy/web", ["po/p1"])
    assert [(i.kind, n) for i, n in pairs] == [("Deployment", "web"), ("Pod", "p1")]
    assert [(i.kind, n) for i, n in kind_and_names("po", ["a", "b"])] == [
        ("Pod", "a"),
        ("Pod", "b"),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration("soon")
