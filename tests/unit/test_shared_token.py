"""SharedToken: every Resource Manager client of a command shares one token per scope."""

from __future__ import annotations

import threading
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

from provision.azure.credentials import REFRESH_MARGIN, SharedToken

SCOPE = "https://management.azure.com/.default"
NOW = 1_000_000.0


class CountingCredential:
    """Like azure-identity's AzureCliCredential: no cache, every call is a fetch (an `az` process)."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self.lifetime = lifetime
        self.closed = False

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.calls.append((scopes, dict(options or {})))
        return AccessTokenInfo(f"token-{len(self.calls)}", int(NOW + self.lifetime))

    def close(self) -> None:
        self.closed = True


def test_clients_one_after_the_other_share_one_fetch() -> None:
    credential = CountingCredential()
    shared = SharedToken(credential, clock=lambda: NOW)
    tokens = {shared.get_token_info(SCOPE, options={}).token for _ in range(3)} | {shared.get_token(SCOPE).token}
    assert tokens == {"token-1"} and len(credential.calls) == 1


def test_clients_asking_at_once_wait_for_one_fetch() -> None:
    credential = CountingCredential()
    slow = threading.Event()
    fetch = credential.get_token_info

    def slow_fetch(*scopes: str, options: Any = None) -> AccessTokenInfo:
        slow.wait(0.2)  # long enough for the other threads to ask meanwhile
        return fetch(*scopes, options=options)

    credential.get_token_info = slow_fetch  # type: ignore[method-assign]
    shared = SharedToken(credential, clock=lambda: NOW)
    threads = [threading.Thread(target=shared.get_token_info, args=(SCOPE,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(credential.calls) == 1


def test_a_token_near_expiry_is_fetched_again() -> None:
    credential = CountingCredential(lifetime=REFRESH_MARGIN + 10)
    now = [NOW]
    shared = SharedToken(credential, clock=lambda: now[0])
    assert shared.get_token_info(SCOPE).token == "token-1"
    now[0] += 11  # within the margin azure-core's policy would refuse
    assert shared.get_token_info(SCOPE).token == "token-2"


def test_scopes_are_cached_apart_and_claims_always_go_to_the_credential() -> None:
    credential = CountingCredential()
    shared = SharedToken(credential, clock=lambda: NOW)
    shared.get_token_info(SCOPE)
    shared.get_token_info("https://ossrdbms-aad.database.windows.net/.default")
    shared.get_token_info(SCOPE, options={"claims": '{"access_token": {}}'})
    shared.get_token(SCOPE, claims='{"access_token": {}}')
    assert [scopes for scopes, _ in credential.calls] == [
        (SCOPE,),
        ("https://ossrdbms-aad.database.windows.net/.default",),
        (SCOPE,),
        (SCOPE,),
    ]


def test_a_credential_with_only_get_token_works_and_close_reaches_it() -> None:
    class Old:
        closed = False

        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("old", int(NOW + 3600))

        def close(self) -> None:
            self.closed = True

    old = Old()
    shared = SharedToken(old, clock=lambda: NOW)
    assert shared.get_token_info(SCOPE).token == "old" and shared.get_token(SCOPE).token == "old"
    shared.close()
    assert old.closed
