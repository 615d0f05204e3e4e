"""The connector apps the tools and the framework's tests start, found by their factory.

Two apps matter: this repository's connector, the factory ``fork.toml`` names (gunicorn
serves it, and the rename writes it), and the reference adapter
(``service/tools/reference.py``), the same in every fork. The framework's tests check a
fork's own artefacts (its settings table, its compose file, its Sesam config, its image's
command) against what the first declares, and the framework's behaviour against the
second, so that they run unchanged in a fork to any upstream with any settings.

``python -m service.tools.apps settings APP`` prints an app's upstream settings as JSON,
for ``python3 -m service.tools.dev run`` (which runs on the system Python and cannot
import the app itself).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import TYPE_CHECKING
from typing import Any

from service.tools.ownership import read_fork

if TYPE_CHECKING:
    from service.framework.app import AppFactory
    from service.framework.settings import Settings
    from service.framework.settings import Variable

# The framework's tests run the reference adapter, which stays the same in every fork.
REFERENCE_APP = "service.tools.reference:create_app()"


def connector_app() -> str:
    """This repository's connector, as ``fork.toml`` names it (``service.<module>:create_app()``)."""
    return read_fork().app


def factory(app: str) -> AppFactory:
    """The ``AppFactory`` a gunicorn app names (``module:create_app()``)."""
    module, _, call = app.partition(":")
    name = call.removesuffix("()")
    if not module or not name.isidentifier():
        raise ValueError(f"not an app factory call (module:name()): {app!r}")
    return getattr(importlib.import_module(module), name)


def connector_factory() -> AppFactory:
    """This repository's connector: its adapter class and its settings class."""
    return factory(connector_app())


def upstream_variables(settings_class: type[Settings]) -> tuple[Variable, ...]:
    """The variables an adapter declares beyond the framework's own."""
    from service.framework.settings import Settings
    from service.framework.settings import variables

    framework = {variable.name for variable in variables(Settings)}
    return tuple(v for v in variables(settings_class) if v.name not in framework)


def reads_the_demo(settings_class: type[Settings]) -> bool:
    """Whether the demo Records API can stand in for this connector's upstream: it reads
    the reference adapter's upstream settings, no more and no fewer. A fork to another
    upstream declares its own and needs its own upstream (or a fake of it) to run."""
    from service.tools.reference import ReferenceSettings

    def names(settings: type[Settings]) -> set[str]:
        return {variable.name for variable in upstream_variables(settings)}

    return names(settings_class) == names(ReferenceSettings)


def describe(app: str) -> dict[str, Any]:
    """What ``dev run`` needs to know of an app before it starts anything."""
    from service.framework.settings import variables

    settings_class = factory(app).settings_class
    return {
        "module": app.partition(":")[0],
        "reads_the_demo": reads_the_demo(settings_class),
        "required": [v.name for v in variables(settings_class) if v.default is None],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "settings":
        print("usage: python -m service.tools.apps settings MODULE:create_app()", file=sys.stderr)
        return 2
    print(json.dumps(describe(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
