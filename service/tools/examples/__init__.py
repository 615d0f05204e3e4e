"""Example adapters beside the fork's own (``service/<module>.py``), to read and copy from.

``tickets``: an upstream unlike the Records API (page numbers, an API key, integer ids,
second-precision times), built from the framework's building blocks. ``docs/examples.md``
walks through it. Tools, not the runtime: the image does not carry them.
"""
