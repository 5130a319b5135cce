"""How pytest-xdist spreads the suite over its workers (``scripts/test`` runs it on one per
core): a module at a time, as xdist's ``loadscope`` does, so that a module's fixtures start
once, except that every end-to-end test is in one unit, run in order by one worker, since
they share the host's Docker engine, network namespaces and iptables."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

E2E = "tests/e2e/"


class EndToEndInOrder(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        return E2E if nodeid.startswith(E2E) else super()._split_scope(nodeid)
