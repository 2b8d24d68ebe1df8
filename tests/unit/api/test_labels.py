import pytest

from shoal.api import Selector, parse_field_selector


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("app=web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app==web,tier!=db", {"app": "web", "tier": "fe"}, True),
        ("tier!=db", {}, True),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env in (prod,staging)", {"env": "dev"}, False),
        ("env notin (prod)", {}, True),
        ("canary", {"canary": ""}, True),
        ("!canary", {"canary": "x"}, False),
        ("", {"anything": "x"}, True),
        ("app=web,env in (a,b),!legacy", {"app": "web", "env": "b"}, True),
    ],
)
def test_selector_matches(selector: str, labels: dict[str, str], match: bool) -> None:
    assert Selector.parse(selector).matches(labels) is match


@pytest.mark.parametrize("bad", ["app=we b", "env in (a", "=x", "bad key!=1", "a=b,,c=d"])
def test_selector_syntax_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        Selector.parse(bad)


def test_selector_string_round_trip() -> None:
    s = Selector.from_match({"app": "web"}, [("env", "In", ["a", "b"]), ("x", "DoesNotExist", [])])
    assert Selector.parse(str(s)) == s


def test_field_selector() -> None:
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Running") == [
        ("spec.nodeName", True, "n1"),
        ("status.phase", False, "Running"),
    ]
    with pytest.raises(ValueError):
        parse_field_selector("spec.nodeName")
