"""What the upstream client raises when the upstream fails (``service.framework.upstream``
and its auth blocks, ``service.framework.upstream_auth``); ``errors.py`` turns each into
the status Sesam sees (502, or 504 for a timeout)."""

from __future__ import annotations


class UpstreamError(Exception):
    """The upstream failed for good. ``status`` is None when no answer came."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time, even after retries."""


class UpstreamRefused(UpstreamError):
    """The upstream refused the connector's credentials (401 or 403): never retried,
    since no retry fixes a wrong or expired token."""
