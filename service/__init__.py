"""A Sesam connector on the reference's framework: see README.md and fork.toml."""
