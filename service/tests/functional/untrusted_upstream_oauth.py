"""The reference adapter behind OAuth2's client credentials grant, for the tests of an
untrusted upstream (``test_untrusted_upstream_credentials.py``): its requests carry a
token that ``service.framework.upstream_auth.OAuth2ClientCredentials`` fetches from a
token endpoint (the hostile upstream's ``/oauth/token``), fetches again when the upstream
answers 401, and must never send to another origin.

Run by gunicorn as ``service.tests.functional.untrusted_upstream_oauth:create_app()``.
"""

from __future__ import annotations

import dataclasses

from service.framework.app import AppFactory
from service.framework.settings import setting
from service.framework.settings import text
from service.framework.settings import url
from service.framework.upstream import UpstreamClient
from service.framework.upstream_auth import OAuth2ClientCredentials
from service.tools.reference import Records
from service.tools.reference import ReferenceSettings

APP = "service.tests.functional.untrusted_upstream_oauth:create_app()"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OAuthSettings(ReferenceSettings):
    """The reference's settings (its UPSTREAM_TOKEN unused), and the OAuth2 client's."""

    oauth_token_url: str = setting("OAUTH_TOKEN_URL", url, meaning="The token endpoint.")
    oauth_client_id: str = setting("OAUTH_CLIENT_ID", text, meaning="The OAuth2 client's id.")
    oauth_client_secret: str = setting(
        "OAUTH_CLIENT_SECRET", text, secret=True, meaning="The OAuth2 client's secret."
    )


class OAuthRecords(Records):
    """The Records API with an OAuth2 access token in place of the static one."""

    def __init__(self, settings: OAuthSettings) -> None:
        super().__init__(settings)
        auth = OAuth2ClientCredentials(
            settings.oauth_token_url, settings.oauth_client_id, settings.oauth_client_secret
        )
        self.client = UpstreamClient.from_settings(settings, settings.upstream_url, auth=auth)


create_app = AppFactory(OAuthRecords, OAuthSettings)
