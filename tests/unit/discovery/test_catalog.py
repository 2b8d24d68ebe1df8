"""The pure catalog: health is the worst check, filters agree with a brute-force scan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shoal.discovery
from shoal.discovery import Catalog, Check, Instance, Node, worst_status
from shoal.errors import ConfigError


def _check(status: str, cid: str = "c") -> Check:
    return Check(cid, cid, status)  # type: ignore[arg-type]


def test_all_is_pinned() -> None:
    assert set(shoal.discovery.__all__) >= {
        "Catalog",
        "Discovery",
        "RegistryConfig",
        "serve_registry",
    }


def test_status_is_worst_check_and_passing_without_checks() -> None:
    assert Instance("a", "s", "n", "", 1).status == "passing"
    inst = Instance("a", "s", "n", "", 1, checks=(_check("passing", "1"), _check("warning", "2")))
    assert inst.status == "warning"
    assert inst.is_healthy() and not inst.is_healthy(include_warning=False)
    crit = Instance("b", "s", "n", "", 1, checks=(_check("critical"), _check("warning", "2")))
    assert crit.status == "critical" and not crit.is_healthy()
    assert worst_status(["warning", "passing", "critical", "passing"]) == "critical"


def test_bad_status_and_duplicates_are_named() -> None:
    with pytest.raises(ConfigError, match="'bogus'"):
        _check("bogus")
    with pytest.raises(ConfigError, match="duplicate service instance id 'x'"):
        Catalog.build([], [Instance("x", "a", "n", "", 1), Instance("x", "b", "n", "", 2)])
    with pytest.raises(ConfigError, match="duplicate node name 'n'"):
        Catalog.build([Node("n", "10.0.0.1"), Node("n", "10.0.0.2")], [])
    with pytest.raises(ConfigError, match="port 70000"):
        Catalog.build([], [Instance("x", "a", "n", "", 70000)])


def test_queries() -> None:
    nodes = [Node("n2", "10.0.0.2"), Node("n1", "10.0.0.1")]
    insts = [
        Instance("web-2", "web", "n2", "", 80, ("b",), checks=(_check("warning"),)),
        Instance("web-1", "web", "n1", "10.9.0.1", 80, ("a", "b")),
        Instance("db-1", "db", "n1", "", 5432, (), checks=(_check("critical"),)),
    ]
    cat = Catalog.build(nodes, insts)
    assert cat.services() == {"db": [], "web": ["a", "b"]}
    assert [i.id for i in cat.instances("web")] == ["web-1", "web-2"]
    assert [i.id for i in cat.instances("web", tag="a")] == ["web-1"]
    assert [i.id for i in cat.instances("web", passing_only=True)] == ["web-1", "web-2"]
    assert [i.id for i in cat.instances("web", passing_only=True, include_warning=False)] == [
        "web-1"
    ]
    assert cat.instances("db", passing_only=True) == []
    assert cat.instances("missing") == []
    assert [n.name for n in cat.nodes()] == ["n1", "n2"]
    assert cat.node("n2") == Node("n2", "10.0.0.2") and cat.node("zz") is None
    assert cat.instance_address(insts[0]) == "10.0.0.2"
    assert cat.instance_address(insts[1]) == "10.9.0.1"
    assert [i.id for i in cat.all_instances()] == ["db-1", "web-1", "web-2"]


_statuses = st.sampled_from(["passing", "warning", "critical"])
_instances = st.lists(
    st.builds(
        lambda svc, tags, statuses: (svc, tuple(tags), tuple(statuses)),
        st.sampled_from(["a", "b", "c"]),
        st.lists(st.sampled_from(["x", "y", "z"]), max_size=3, unique=True),
        st.lists(_statuses, max_size=3),
    ),
    max_size=25,
)


@given(
    _instances,
    st.sampled_from(["a", "b", "c", "d"]),
    st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    st.booleans(),
    st.booleans(),
)
def test_filters_agree_with_brute_force(
    specs: list[tuple[str, tuple[str, ...], tuple[str, ...]]],
    service: str,
    tag: str | None,
    passing_only: bool,
    include_warning: bool,
) -> None:
    insts = [
        Instance(
            f"i{n}",
            svc,
            "node",
            "",
            n,
            tags,
            checks=tuple(_check(s, f"c{k}") for k, s in enumerate(statuses)),
        )
        for n, (svc, tags, statuses) in enumerate(specs)
    ]
    cat = Catalog.build([Node("node", "10.0.0.1")], reversed(insts))
    severity = {"passing": 0, "warning": 1, "critical": 2}
    limit = 1 if include_warning else 0
    expected = sorted(
        (
            i.id
            for i, (svc, tags, statuses) in zip(insts, specs, strict=True)
            if svc == service
            and (tag is None or tag in tags)
            and (not passing_only or max((severity[s] for s in statuses), default=0) <= limit)
        ),
    )
    got = cat.instances(
        service, tag=tag, passing_only=passing_only, include_warning=include_warning
    )
    assert [i.id for i in got] == expected
    assert set(cat.services()) == {svc for svc, _, _ in specs}
