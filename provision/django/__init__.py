"""A Django database backend that logs in with an Entra access token (`pip install provision[django]`):

    DATABASES = {
        "default": {
            "ENGINE": "provision.django",
            "HOST": "myflex.postgres.database.azure.com",
            "NAME": "appdb",
            "USER": "myuser",                      # leave out to take it from the token
            "OPTIONS": {"client_id": "<client id>"},  # or "credential": DefaultAzureCredential()
            "CONN_MAX_AGE": 600,
        }
    }

It is Django's own postgresql backend; every new connection gets a current token as its password, so
persistent connections (CONN_MAX_AGE) that Django reopens after their token has expired log in with
a new one. OPTIONS also take `cloud` and `single_server` (as in `provision.connect`), and libpq's
`sslmode` (verify-full unless set) and `sslrootcert`.
"""
