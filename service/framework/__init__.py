"""The runtime: Sesam's protocols, the upstream client, settings, errors. A fork leaves it alone.

``__version__`` is the framework's release (CHANGELOG.md), semantic: the adapter contract
(``service.framework.adapter`` and the blocks an adapter picks from) and the settings are
its API, so a release that breaks a fork's adapter or renames a setting is a major one.
Gunicorn logs it at start-up; docs/upgrading.md says how a fork takes the next one.
"""

__version__ = "2.0.1"
