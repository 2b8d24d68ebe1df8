"""UDP trimming as Consul's trimUDPResponse does it: as many records as fit, TC set."""

from __future__ import annotations

import functools

import dns.flags
import dns.message
import pytest

from shoal.discovery import Catalog, Instance, Node
from shoal.discovery.dns import AnswerTable, DNSConfig, build_table

NODES = [Node("n1", "10.0.0.1")]


def _catalog(counts: range) -> Catalog:
    """Services s5..s79 with that many instances each, all on their own addresses."""
    insts = [
        Instance(f"s{count}-{i}", f"s{count}", "n1", f"10.{count}.{i // 200}.{i % 200 + 1}", 80 + i)
        for count in counts
        for i in range(count)
    ]
    return Catalog.build(NODES, insts)


@functools.cache
def _table(**config: object) -> AnswerTable:
    return build_table(_catalog(range(1, 80)), DNSConfig(**config))  # type: ignore[arg-type]


def _query(name: str, rdtype: str, payload: int) -> bytes:
    edns: dict[str, int] = {"use_edns": 0, "payload": payload} if payload else {}
    return dns.message.make_query(name, rdtype, **edns).to_wire()  # type: ignore[arg-type]


def _parse(wire: bytes | None) -> dns.message.Message:
    assert wire is not None
    return dns.message.from_wire(wire)


def _answers(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


@pytest.mark.parametrize("payload", [0, 600, 1232, 4096])
@pytest.mark.parametrize("rdtype", ["A", "SRV"])
def test_trimmed_to_fit_with_tc_exactly_when_records_were_left_out(
    payload: int, rdtype: str
) -> None:
    table = _table()
    limit = payload or 512
    seen = set()
    for count in range(1, 80):
        query = _query(f"s{count}.service.consul", rdtype, payload)
        wire = table.answer(query, True)
        full = _parse(table.answer(query, False))
        assert wire is not None and len(wire) <= limit
        msg = _parse(wire)
        kept, everything = _answers(msg), _answers(full)
        assert len(everything) == count
        assert set(kept) <= set(everything) and kept
        truncated = bool(msg.flags & dns.flags.TC)
        assert truncated == (len(kept) < count)
        seen.add(truncated)
        if not payload:
            assert len(kept) <= 3  # Consul's udp_answer_limit for clients without EDNS
        elif truncated:
            # As many as fit: one more record (A: 16 bytes; SRV: 44 + its target's A, 40)
            # would not have.
            assert len(wire) + (84 if rdtype == "SRV" else 16) > limit
        if rdtype == "SRV":
            # Only the kept records' targets are in the additional section.
            targets = {rd.target for rrset in msg.answer for rd in rrset}
            assert {rrset.name for rrset in msg.additional} == targets
    # 79 A records (1.3 KB) fit in 4 KB; every other case trims the larger services.
    assert seen == ({False} if (payload, rdtype) == (4096, "A") else {True, False})


def test_every_record_is_served_over_truncated_answers() -> None:
    """Rotations of a trimmed answer start far enough apart that no record is starved."""
    table = _table()
    query = _query("s79.service.consul", "A", 0)
    served: set[str] = set()
    for _ in range(64):
        served |= set(_answers(_parse(table.answer(query, True))))
    assert len(served) == 79


def test_enable_truncate_false_trims_silently_like_consuls_default() -> None:
    msg = _parse(_table(enable_truncate=False).answer(_query("s40.service.consul", "A", 0)))
    assert len(_answers(msg)) == 3 and not msg.flags & dns.flags.TC


def test_udp_answer_limit_only_for_small_clients_and_capped_at_8() -> None:
    table = _table(udp_answer_limit=20)
    small = _parse(table.answer(_query("s40.service.consul", "A", 0)))
    assert len(_answers(small)) == 8 and small.flags & dns.flags.TC
    edns = _parse(table.answer(_query("s40.service.consul", "A", 1232)))
    assert len(_answers(edns)) == 40 and not edns.flags & dns.flags.TC


def test_a_record_limit_applies_to_every_transport_without_tc() -> None:
    table = _table(a_record_limit=5)
    for udp in (True, False):
        msg = _parse(table.answer(_query("s40.service.consul", "A", 4096), udp))
        assert len(_answers(msg)) == 5 and not msg.flags & dns.flags.TC
    srv = _parse(table.answer(_query("s40.service.consul", "SRV", 0), False))
    assert len(_answers(srv)) == 40  # SRV is not an address answer


def test_max_udp_payload_caps_what_an_edns_client_may_ask_for() -> None:
    table = _table(max_udp_payload=1232)
    wire = table.answer(_query("s79.service.consul", "SRV", 4096))
    msg = _parse(wire)
    assert wire is not None and len(wire) <= 1232 and msg.flags & dns.flags.TC
    assert msg.payload == 1232
