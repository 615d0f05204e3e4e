"""Tools for developers: never in the runtime image (dev runner, rename, local Sesam runner,
demo upstream, benchmarks)."""
