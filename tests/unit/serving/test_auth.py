"""Roles, API keys and bearer tokens (serving.auth), without a server."""

from __future__ import annotations

import hashlib
import time

import jwt
import pytest

from schemas.settings import Settings
from serving.auth import ANONYMOUS, Authenticator, AuthError, Role, refusal

GOOD_KEY = "k" * 40
GOOD_SECRET = "s" * 48


def _auth(**kw: object) -> Authenticator:
    base: dict[str, object] = {"api_key": GOOD_KEY, "token_secret": GOOD_SECRET}
    return Authenticator(Settings(**{**base, **kw}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"api_key": ""}, "RACEWIRE_API_KEY: it is empty"),
    ({"api_key": "dev-key"}, "RACEWIRE_API_KEY: 'dev-key' is a placeholder"),
    ({"api_key": "replace-me"}, "RACEWIRE_API_KEY: 'replace-me' is a placeholder"),
    ({"api_key": "short-key"}, "RACEWIRE_API_KEY: it has 9 characters (at least 16)"),
    ({"api_keys": "changeme:operator"}, "RACEWIRE_API_KEYS entry 1: 'changeme' is a placeholder"),
    ({"token_secret": ""}, "RACEWIRE_TOKEN_SECRET: it is empty"),
    ({"token_secret": "replace-me"}, "RACEWIRE_TOKEN_SECRET: 'replace-me' is a placeholder"),
    ({"token_secret": "x" * 20}, "RACEWIRE_TOKEN_SECRET: it has 20 characters (at least 32)"),
])
def test_weak_secrets_are_named(kw: dict[str, object], needle: str) -> None:
    assert needle in _auth(**kw).weaknesses


def test_strong_secrets_have_no_weakness() -> None:
    assert _auth(api_keys=f"{'o' * 24}:operator").weaknesses == []


def test_keys_and_hashed_keys_carry_their_role() -> None:
    op, hashed = "o" * 24, "h" * 24
    auth = _auth(api_keys=f"{op}:operator, sha256:{hashlib.sha256(hashed.encode()).hexdigest()}:admin")
    assert auth.from_headers(op, None).role is Role.OPERATOR
    assert auth.from_headers(hashed, None).role is Role.ADMIN
    assert auth.from_headers(GOOD_KEY, None).role is Role.ADMIN
    assert auth.from_headers(None, None) is ANONYMOUS
    assert auth.from_headers(None, "Basic abc") is ANONYMOUS  # not a bearer token: the token endpoint's business
    with pytest.raises(AuthError, match="invalid API key"):
        auth.from_headers("o" * 23, None)


@pytest.mark.parametrize("entry", ["nocolon", "key:superuser", "key:public", "sha256:abcd:admin"])
def test_malformed_key_entries_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError):
        _auth(api_keys=entry)


def test_a_token_carries_the_role_and_ends_with_its_key() -> None:
    op = "o" * 24
    auth = _auth(api_keys=f"{op}:operator")
    key = auth.key(op)
    assert key is not None
    issued = auth.issue(key, Role.OPERATOR, "ci")
    principal = auth.from_headers(None, f"Bearer {issued['access_token']}")
    assert (principal.role, principal.subject, principal.via) == (Role.OPERATOR, "ci", "token")
    claims = jwt.decode(issued["access_token"], GOOD_SECRET, algorithms=["HS256"], audience="racewire")
    assert claims["exp"] - claims["iat"] == 3600 and claims["key"] == key.fingerprint
    # the key is removed (a restart with other settings): its tokens end with it
    with pytest.raises(AuthError, match="no longer valid"):
        _auth().verify(issued["access_token"])
    # a token minted for more than its key allows is refused
    forged = jwt.encode({"iss": "racewire", "aud": "racewire", "sub": "x", "role": "admin", "key": key.fingerprint,
                         "iat": int(time.time()), "exp": int(time.time()) + 60}, GOOD_SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="no longer valid"):
        auth.verify(forged)


def test_refusals_say_401_without_credentials_and_403_with_too_few() -> None:
    needs = refusal(ANONYMOUS, Role.OPERATOR)
    assert needs is not None and needs.status_code == 401 and "X-API-Key" in needs.detail
    auth = _auth(api_keys=f"{'o' * 24}:operator")
    op = auth.from_headers("o" * 24, None)
    too_few = refusal(op, Role.ADMIN)
    assert too_few is not None and too_few.status_code == 403 and "admin" in too_few.detail
    assert refusal(op, Role.OPERATOR) is None


def test_trusted_proxies_refuse_a_wildcard_and_non_addresses() -> None:
    assert Settings(trusted_proxies="10.0.0.0/8, 127.0.0.1").trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    for bad in ("*", "proxy.local"):
        with pytest.raises(ValueError):
            Settings(trusted_proxies=bad)
