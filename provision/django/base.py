"""The `provision.django` database backend: Django's postgresql backend with token login."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base

from provision.db.login import TokenLogin
from provision.errors import InvalidInput

# OPTIONS that pick the token rather than go to psycopg.
TOKEN_OPTIONS = ("client_id", "cloud", "credential", "single_server")


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        """Django's parameters with a current token as the password; called for every new connection."""
        options = self.settings_dict["OPTIONS"]
        if options.get("pool"):
            # Django's pool takes its connection parameters once, so every connection would reuse the
            # first token until the pool closes.
            raise InvalidInput(
                "provision.django: OPTIONS['pool'] is not supported (the pool would keep the first token);"
                " use CONN_MAX_AGE for persistent connections"
            )
        if self.settings_dict["PASSWORD"]:
            raise InvalidInput("provision.django: leave PASSWORD empty, the access token is the password")
        params: dict[str, Any] = super().get_connection_params()
        token_options = {name: params.pop(name) for name in TOKEN_OPTIONS if name in params}
        login = TokenLogin(
            params.get("host") or "",
            params.get("user") or None,
            params["dbname"],
            port=int(params.get("port") or 5432),
            sslmode=params.pop("sslmode", "verify-full"),
            sslrootcert=params.pop("sslrootcert", None),
            **token_options,
        )
        token_params = login.connect_kwargs(login.token())
        # The token's user and password always; other settings (application_name, ...) are Django's if set.
        return {**token_params, **params, "user": token_params["user"], "password": token_params["password"]}
