"""The runtime: Sesam's protocols, the upstream client, settings, errors. A fork leaves it alone."""
