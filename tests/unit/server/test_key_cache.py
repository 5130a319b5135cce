"""The verified-key cache: hits only for the right secret, cleared by any credential change."""

from __future__ import annotations

from server.api.auth import KeyCache
from server.api.context import Principal, PrincipalKind
from server.store import Record

ADMIN = Principal(kind=PrincipalKind.ADMIN, account_id=1, credential_id=4)


def record(type_: str) -> Record:
    return Record(id=9, type=type_, kind=type_, uuid="u", name=None, description=None,
                  state="active", project_id=None, account_id=None, created=0, removed=None,
                  transitioning="no", transitioning_message=None, transitioning_progress=None,
                  lookup_key=None, data={}, version=1)


def test_a_cached_key_answers_only_for_its_own_secret() -> None:
    cache = KeyCache()
    cache.put("AK", "secret", ADMIN)
    assert cache.get("AK", "secret") == ADMIN
    assert cache.get("AK", "wrong") is None
    assert cache.get("OTHER", "secret") is None


def test_entries_expire() -> None:
    cache = KeyCache(seconds=-1)
    cache.put("AK", "secret", ADMIN)
    assert cache.get("AK", "secret") is None


def test_a_change_to_a_key_account_or_environment_clears_the_cache() -> None:
    for type_ in ("apiKey", "account", "project"):
        cache = KeyCache()
        cache.put("AK", "secret", ADMIN)
        cache.on_change(record(type_))
        assert cache.get("AK", "secret") is None


def test_other_changes_keep_the_cache() -> None:
    cache = KeyCache()
    cache.put("AK", "secret", ADMIN)
    cache.on_change(record("host"))
    assert cache.get("AK", "secret") == ADMIN
