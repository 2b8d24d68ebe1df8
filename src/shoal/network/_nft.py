"""The shell around :mod:`shoal.network._nftrules`: keeps one node's nftables table in step
with the rule sets it is given, one atomic ``nft -f -`` transaction per change."""

from __future__ import annotations

import asyncio
import logging

from shoal.errors import NetworkError
from shoal.network._exec import arun
from shoal.network._nftrules import RuleSet, render_delete, render_delta, render_full

log = logging.getLogger(__name__)


class NftTable:
    """Table ``table`` (family ``ip``) in network namespace ``netns`` (None: this one).

    The first :meth:`apply` writes the whole table; later ones send only the difference from
    the rule set last applied. Should a delta fail (the table was changed or deleted behind
    our back), the whole table is written once more, which repairs any drift."""

    def __init__(self, table: str, *, netns: str | None = None) -> None:
        self.table = table
        self.netns = netns
        self._applied: RuleSet | None = None
        self._lock = asyncio.Lock()

    async def _nft(self, script: str) -> None:
        await arun(["nft", "-f", "-"], netns=self.netns, input=script)

    async def apply(self, ruleset: RuleSet) -> str:
        """Make the table hold ``ruleset``. Returns how: ``"full"``, ``"delta"``, or
        ``"unchanged"`` (nothing to send). Raises NetworkError when even a full write fails;
        the next call then writes in full again."""
        if ruleset.table != self.table:
            raise ValueError(f"rule set is for table {ruleset.table!r}, not {self.table!r}")
        async with self._lock:
            previous, self._applied = self._applied, None
            if previous is not None:
                script = render_delta(previous, ruleset)
                if not script:
                    self._applied = ruleset
                    return "unchanged"
                try:
                    await self._nft(script)
                except NetworkError as exc:
                    log.warning("nft delta on table %s failed, rewriting it: %s", self.table, exc)
                else:
                    self._applied = ruleset
                    return "delta"
            await self._nft(render_full(ruleset))
            self._applied = ruleset
            return "full"

    async def remove(self) -> None:
        """Delete the table; fine when it is already gone."""
        async with self._lock:
            self._applied = None
            await self._nft(render_delete(self.table))

    async def exists(self) -> bool:
        """Whether the table is present in the namespace."""
        out = await arun(["nft", "list", "tables", "ip"], netns=self.netns)
        return any(line.split() == ["table", "ip", self.table] for line in out.splitlines())
