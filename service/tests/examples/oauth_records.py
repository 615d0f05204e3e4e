"""The Records adapter behind OAuth2 client credentials, for the conformance suite's check
of expiring tokens; and, BROKEN ON PURPOSE, the same adapter with a token fetched once.

``OAuthRecords`` is the reference Records adapter with its client's auth swapped for the
framework's ``OAuth2ClientCredentials`` block (a token fetched when needed, again before
it expires, and again when the upstream answers 401). ``TokenOnceRecords`` is what a fork
wrote first: it fetches a token when it starts and sends it as a static bearer token for
ever. Against a fake whose tokens live an hour it passed every other check; in production
it failed when its first token expired. ``test_an_upstream_token_that_expires_is_replaced``
must fail it (``test_conformance_catches_stale_tokens.py``).
"""

from __future__ import annotations

import dataclasses

import requests

from service.framework.app import AppFactory
from service.framework.settings import setting
from service.framework.settings import text
from service.framework.settings import url
from service.framework.upstream import UpstreamClient
from service.framework.upstream_auth import BearerToken
from service.framework.upstream_auth import OAuth2ClientCredentials
from service.tools.reference import Records
from service.tools.reference import ReferenceSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class OAuthRecordsSettings(ReferenceSettings):
    """The reference's settings (``UPSTREAM_TOKEN`` is not sent), and the OAuth2 client's."""

    records_token_url: str = setting(
        "RECORDS_TOKEN_URL", url, meaning="The Records API's OAuth2 token endpoint."
    )
    records_client_id: str = setting("RECORDS_CLIENT_ID", text, meaning="OAuth2 client id.")
    records_client_secret: str = setting(
        "RECORDS_CLIENT_SECRET", text, secret=True, meaning="OAuth2 client secret."
    )


class OAuthRecords(Records):
    """The Records API with OAuth2 client credentials."""

    def __init__(self, settings: OAuthRecordsSettings) -> None:
        super().__init__(settings)
        self.client = UpstreamClient.from_settings(
            settings, settings.upstream_url, auth=self.auth(settings)
        )

    def auth(self, settings: OAuthRecordsSettings) -> requests.auth.AuthBase:
        return OAuth2ClientCredentials(
            settings.records_token_url, settings.records_client_id, settings.records_client_secret
        )


class TokenOnceRecords(OAuthRecords):
    """BROKEN ON PURPOSE: one token, fetched at start, never refreshed."""

    def auth(self, settings: OAuthRecordsSettings) -> requests.auth.AuthBase:
        token = OAuth2ClientCredentials(
            settings.records_token_url, settings.records_client_id, settings.records_client_secret
        ).token()
        return BearerToken(token)


create_app = AppFactory(OAuthRecords, OAuthRecordsSettings)
create_token_once_app = AppFactory(TokenOnceRecords, OAuthRecordsSettings)
