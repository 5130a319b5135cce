"""Reading every record a query matches, a page at a time (no query reads without a limit)."""

from __future__ import annotations

from server.store.interface import Query, Reader, Record

PAGE = 500


async def list_all(reader: Reader, query: Query) -> list[Record]:
    """Every record ``query`` matches, page by page."""
    out: list[Record] = []
    offset = 0
    while True:
        page = await reader.list(Query(**{**query.__dict__, "limit": PAGE, "offset": offset}))
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += PAGE
