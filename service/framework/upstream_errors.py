"""What the upstream client raises when the upstream fails (``service.framework.upstream``
and its auth blocks, ``service.framework.upstream_auth``); ``errors.py`` turns each into
the status Sesam sees (502, or 504 for a timeout)."""

from __future__ import annotations

from service.framework.masking import mask


class UpstreamError(Exception):
    """The upstream failed for good. ``status`` is None when no answer came.

    The message may quote the upstream (its error text, a Location, a next link): every
    secret is masked in it here, before any answer or log line can carry it."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(mask(message))
        self.status = status
        self.url = mask(url)


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time, even after retries."""


class AnswerTooLarge(UpstreamError):
    """An upstream answer (or one of its records) was larger than its limit allows."""


class UpstreamRefused(UpstreamError):
    """The upstream refused the connector's credentials (401 or 403): never retried,
    since no retry fixes a wrong or expired token."""
