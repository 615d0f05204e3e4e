"""The reference Sesam connector: see README.md."""
