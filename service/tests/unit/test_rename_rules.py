"""The rename command's rules, on a miniature fork in a temporary directory.

The whole-repository rename (and the renamed copy's own tests) is in
``functional/test_rename.py``; here are the name rules, idempotence, --force, and that
prose saying "connector" is left alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.tools import rename

CONNECTOR = '''"""The Records API connector. Run it with
gunicorn -c service/gunicorn.conf.py 'service.connector:create_app()'."""

# FORK: the collections
COLLECTION = "x"


def create_app(config=None):
    return None
'''
CONFTEST = """from __future__ import annotations

from service.connector import create_app
from service.framework.feed import register_feed
from service.framework.settings import load_settings

GUNICORN_COMMAND = ["gunicorn", "service.connector:create_app()"]
"""
README = """# The reference Sesam connector (Python, Flask)

This connector is meant to be forked; edit `service/connector.py`.
Start the pipe `connector-people`, then `people-to-connector`; the service `connector`
runs the image `yourorg/connector` (push `ghcr.io/me/connector:1.0.0`); its state is in
`/tmp/connector-state` and `connector_environment()` builds its settings.

```sh
gunicorn -c service/gunicorn.conf.py 'service.connector:create_app()'
docker-compose exec connector pytest
docker build -t yourorg/connector:dev .
```
"""
COMPOSE = """services:
  connector:
    build: .
    image: yourorg/connector:dev
    depends_on:
      - upstream
  upstream:
    image: yourorg/connector-demo-upstream:dev
"""
DOCKERFILE = """FROM python:3.12-slim-bookworm
CMD ["gunicorn", "-c", "service/gunicorn.conf.py", "service.connector:create_app()"]
"""
SESAM_SYSTEM = """{"_id": "connector", "type": "system:microservice",
 "docker": {"image": "yourorg/connector:1.0.0", "port": 5000}}
"""
SESAM_PIPE = """{"_id": "connector-people", "type": "pipe",
 "source": {"type": "json", "system": "connector", "url": "people"}}
"""
TEST_COMPOSE = """def test_it(compose):
    assert compose["services"]["connector"]["image"] == "x"
    services = compose["services"]
    assert services["upstream"] and services['connector']
"""
WORKFLOW = """env:
  IMAGE: yourorg/connector
  # as in sesam/systems/connector.conf.json
jobs:
  test:
    steps:
      - run: docker build -t connector:ci .
      - run: python -m pytest service/tests/test_connector.py
"""


def make_fork(root: Path) -> Path:
    files = {
        "service/__init__.py": "",
        "service/framework/settings.py": "def load_settings():\n    return None\n",
        "service/framework/feed.py": "def register_feed():\n    return None\n",
        "service/connector.py": CONNECTOR,
        "service/tests/conftest.py": CONFTEST,
        "service/tests/test_connector.py": "from service.connector import create_app\n",
        "README.md": README,
        "docker-compose.yml": COMPOSE,
        "Dockerfile": DOCKERFILE,
        "sesam/systems/connector.conf.json": SESAM_SYSTEM,
        "sesam/pipes/connector-people.conf.json": SESAM_PIPE,
        "service/tests/test_compose.py": TEST_COMPOSE,
        ".github/workflows/ci.yml": WORKFLOW,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(root: Path, name: str, *options: str) -> int:
    return rename.main(["--root", str(root), *options, "--", name])


@pytest.mark.parametrize("name", ["acme-crm", "ab", "x2", "a" * 63, "crm_v2", "a-b_c"])
def test_names_sesam_and_python_can_both_take_are_accepted(name):
    rename.check_name(name)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a", "2 to 63"),
        ("a" * 64, "2 to 63"),
        ("Acme", "lower-case"),
        ("-acme", "starting with a letter or digit"),
        ("_acme", "starting with a letter or digit"),
        ("acme crm", "Sesam microservice id"),
        ("acme.crm", "Sesam microservice id"),
        ("ærø", "ASCII"),
        ("9lives", "starts with a digit"),
        ("class", "keyword"),
        ("for", "keyword"),
        ("config", "clashes"),
        ("sink", "clashes"),
        ("feed", "clashes"),
        ("upstream", "clashes"),
        ("errors", "clashes"),
        ("rename", "clashes"),
        ("demo-upstream", "clashes"),
    ],
)
def test_names_sesam_or_python_cannot_take_are_refused_with_one_line(tmp_path, capsys, name, words):
    fork = make_fork(tmp_path)
    before = snapshot(fork)
    assert run(fork, name) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rename: refused: ")
    assert words in err
    assert snapshot(fork) == before


def test_a_rename_moves_the_module_and_every_place_that_names_it(tmp_path, capsys):
    fork = make_fork(tmp_path)
    assert run(fork, "acme-crm") == 0
    assert not (fork / "service/connector.py").exists()
    assert (fork / "service/acme_crm.py").read_text() == CONNECTOR.replace(
        "service.connector", "service.acme_crm"
    )
    assert (fork / "service/tests/test_acme_crm.py").read_text() == (
        "from service.acme_crm import create_app\n"
    )
    assert not (fork / "service/tests/test_connector.py").exists()
    readme = (fork / "README.md").read_text()
    assert readme.splitlines()[0] == "# acme-crm: a Sesam connector (Python, Flask)"
    assert "This connector is meant to be forked; edit `service/acme_crm.py`." in readme
    assert "'service.acme_crm:create_app()'" in readme
    assert "docker-compose exec acme-crm pytest" in readme
    assert "docker build -t yourorg/acme-crm:dev ." in readme
    assert (
        "Start the pipe `acme-crm-people`, then `people-to-acme-crm`; the service "
        "`acme-crm`\nruns the image `yourorg/acme-crm` (push `ghcr.io/me/acme-crm:1.0.0`); "
        "its state is in\n`/tmp/connector-state` and `connector_environment()` builds "
        "its settings.\n"
    ) in readme
    compose = (fork / "docker-compose.yml").read_text()
    assert "\n  acme-crm:\n    build: .\n    image: yourorg/acme-crm:dev\n" in compose
    assert "  upstream:\n" in compose and "      - upstream\n" in compose
    assert '"service.acme_crm:create_app()"' in (fork / "Dockerfile").read_text()
    assert not list((fork / "sesam").glob("**/connector*"))
    assert (fork / "sesam/systems/acme-crm.conf.json").read_text() == SESAM_SYSTEM.replace(
        '"connector"', '"acme-crm"'
    ).replace("yourorg/connector:", "yourorg/acme-crm:")
    assert (fork / "sesam/pipes/acme-crm-people.conf.json").read_text() == (
        '{"_id": "acme-crm-people", "type": "pipe",\n'
        ' "source": {"type": "json", "system": "acme-crm", "url": "people"}}\n'
    )
    assert (fork / "service/tests/test_compose.py").read_text() == TEST_COMPOSE.replace(
        '["connector"]', '["acme-crm"]'
    ).replace("['connector']", "['acme-crm']")
    workflow = (fork / ".github/workflows/ci.yml").read_text()
    assert "  IMAGE: yourorg/acme-crm\n  # as in sesam/systems/acme-crm.conf.json\n" in workflow
    assert "docker build -t acme-crm:ci ." in workflow
    assert "service/tests/test_acme_crm.py" in workflow
    out = capsys.readouterr().out
    assert "renamed connector to acme-crm" in out


def test_imports_stay_in_isort_order_after_the_module_changes_name(tmp_path):
    fork = make_fork(tmp_path)
    assert run(fork, "zeta") == 0
    lines = (fork / "service/tests/conftest.py").read_text().splitlines()
    assert lines[2:5] == [
        "from service.framework.feed import register_feed",
        "from service.framework.settings import load_settings",
        "from service.zeta import create_app",
    ]


def test_running_it_twice_with_the_same_name_changes_nothing(tmp_path, capsys):
    fork = make_fork(tmp_path)
    assert run(fork, "acme-crm") == 0
    renamed = snapshot(fork)
    capsys.readouterr()
    assert run(fork, "acme-crm") == 0
    assert capsys.readouterr().out == "already named acme-crm: nothing to change\n"
    assert snapshot(fork) == renamed


def test_a_second_rename_needs_force(tmp_path, capsys):
    fork = make_fork(tmp_path)
    assert run(fork, "acme-crm") == 0
    renamed = snapshot(fork)
    capsys.readouterr()
    assert run(fork, "billing-hub") == 2
    err = capsys.readouterr().err
    assert err == (
        "rename: refused: this fork is already renamed to 'acme-crm'; "
        "pass --force to rename it to 'billing-hub'\n"
    )
    assert snapshot(fork) == renamed
    assert run(fork, "billing-hub", "--force") == 0
    assert (fork / "service/billing_hub.py").exists()
    assert not (fork / "service/acme_crm.py").exists()
    assert "\n  billing-hub:\n" in (fork / "docker-compose.yml").read_text()
    assert "docker-compose exec billing-hub pytest" in (fork / "README.md").read_text()
    assert (fork / "README.md").read_text().startswith("# billing-hub: a Sesam connector")


def test_a_pipe_whose_id_names_the_connector_twice_keeps_its_file_and_id_in_step(tmp_path):
    """A fork named after its collection (``invoices``) has a pipe ``invoices-invoices``;
    renamed again, the pipe's id and its file's name must change alike (Sesam's expected
    output is found by the pipe's id)."""
    fork = make_fork(tmp_path)
    assert run(fork, "invoices") == 0
    pipe = fork / "sesam/pipes/invoices-invoices.conf.json"
    (fork / "sesam/pipes/invoices-people.conf.json").rename(pipe)
    pipe.write_text(pipe.read_text().replace('"invoices-people"', '"invoices-invoices"'))
    assert run(fork, "acme-crm", "--force") == 0
    moved = sorted(p.name for p in (fork / "sesam/pipes").iterdir())
    assert moved == ["acme-crm-invoices.conf.json"]
    assert '"_id": "acme-crm-invoices"' in (fork / "sesam/pipes" / moved[0]).read_text()


def test_a_rerun_repairs_places_that_still_name_the_original(tmp_path):
    """After merging a change from the reference, a file may name service.connector again."""
    fork = make_fork(tmp_path)
    assert run(fork, "acme-crm") == 0
    (fork / "service/tools").mkdir()
    (fork / "service/tools/dev.py").write_text('ARGS = ["service.connector:create_app()"]\n')
    assert run(fork, "acme-crm") == 0
    assert (
        fork / "service/tools/dev.py"
    ).read_text() == 'ARGS = ["service.acme_crm:create_app()"]\n'


DESCRIBED_SYSTEM = """{"_id": "connector", "type": "system:microservice",
 "description": "The connector's image. Set the secret connector-password on this system.",
 "password": "$SECRET(connector-password)"}
"""
DESCRIBED_PIPE = """{"_id": "connector-people-endpoint", "type": "pipe",
 "description": "Publishes connector-people (as people-to-connector writes it); sesam test checks expected/connector-people-endpoint.json.",
 "source": {"type": "dataset", "dataset": "connector-people"}}
"""


def test_the_sesam_ids_a_description_names_are_renamed_and_prose_and_secrets_are_not(tmp_path):
    """The descriptions named the pipes by their ids: after a rename they named pipes and
    files that no longer exist. Prose ("the connector's image") stays, and so does a
    secret's name that no id renames (it must match its $SECRET)."""
    fork = make_fork(tmp_path)
    (fork / "sesam/systems/connector.conf.json").write_text(DESCRIBED_SYSTEM)
    (fork / "sesam/pipes/connector-people-endpoint.conf.json").write_text(DESCRIBED_PIPE)
    (fork / "sesam/pipes/people-to-connector.conf.json").write_text(
        '{"_id": "people-to-connector", "type": "pipe"}\n'
    )
    assert run(fork, "acme-crm") == 0
    pipe = (fork / "sesam/pipes/acme-crm-people-endpoint.conf.json").read_text()
    assert (
        '"Publishes acme-crm-people (as people-to-acme-crm writes it); sesam test checks '
        'expected/acme-crm-people-endpoint.json."'
    ) in pipe
    system = (fork / "sesam/systems/acme-crm.conf.json").read_text()
    assert "The connector's image. Set the secret connector-password on this system." in system
    assert "$SECRET(connector-password)" in system

    # A description merged again from the reference is repaired by a rerun.
    path = fork / "sesam/pipes/acme-crm-people-endpoint.conf.json"
    path.write_text(pipe.replace("Publishes acme-crm-people", "Publishes connector-people"))
    assert run(fork, "acme-crm") == 0
    assert "Publishes acme-crm-people (" in path.read_text()


def test_a_name_taken_by_a_file_in_service_is_refused(tmp_path, capsys):
    fork = make_fork(tmp_path)
    (fork / "service/billing.py").write_text("X = 1\n")
    before = snapshot(fork)
    assert run(fork, "billing") == 2
    assert "service/billing.py already exists" in capsys.readouterr().err
    assert snapshot(fork) == before


def test_a_dry_run_changes_nothing(tmp_path, capsys):
    fork = make_fork(tmp_path)
    before = snapshot(fork)
    assert run(fork, "acme-crm", "--dry-run") == 0
    assert "move service/connector.py -> service/acme_crm.py" in capsys.readouterr().out
    assert snapshot(fork) == before


def test_a_place_the_command_does_not_know_is_reported(tmp_path, capsys):
    fork = make_fork(tmp_path)
    (fork / "docs").mkdir()
    (fork / "docs/notes.txt").write_text("start: gunicorn 'service.connector:create_app()'\n")
    assert run(fork, "acme-crm") == 1
    out = capsys.readouterr().out
    assert "docs/notes.txt:1:" in out and "edit them by hand" in out


def test_outside_a_fork_it_refuses(tmp_path, capsys):
    assert run(tmp_path, "acme-crm") == 2
    assert "root of a fork" in capsys.readouterr().err


def test_a_long_name_gets_its_lines_rewrapped_by_the_forks_ruff_settings(tmp_path):
    root = make_fork(tmp_path)
    (root / "service" / "ruff.toml").write_text("line-length = 60\n")
    (root / "service" / "dev.py").write_text(
        'ARGS = ["-c", "service/gunicorn.conf.py", "service.connector:create_app()"]\n'
    )
    assert run(root, "salesforce-marketing-cloud") == 0
    dev = (root / "service" / "dev.py").read_text()
    assert "service.salesforce_marketing_cloud:create_app()" in dev
    assert max(len(line) for line in dev.splitlines()) <= 60, dev


def test_the_forks_own_ruff_in_dot_venv_comes_first(tmp_path):
    ruff = tmp_path / ".venv" / "bin" / "ruff"
    ruff.parent.mkdir(parents=True)
    ruff.write_text("#!/bin/sh\nexit 0\n")
    ruff.chmod(0o755)
    assert rename.find_ruff(tmp_path) == str(ruff)


def test_the_docs_pages_are_renamed_like_the_readme(tmp_path):
    root = make_fork(tmp_path)
    (root / "docs" / "operations").mkdir(parents=True)
    (root / "docs" / "operations" / "running.md").write_text(
        "gunicorn -c service/gunicorn.conf.py 'service.connector:create_app()'\n"
        "docker-compose exec connector pytest\n"
        "Edit `service/connector.py`; the connector answers on :5000.\n"
    )
    assert run(root, "acme-crm") == 0
    page = (root / "docs" / "operations" / "running.md").read_text()
    assert "'service.acme_crm:create_app()'" in page
    assert "docker-compose exec acme-crm pytest" in page
    assert "`service/acme_crm.py`; the connector answers" in page  # prose left alone


@pytest.mark.parametrize("name", ["framework", "tools", "sesam-client", "servers", "adapter"])
def test_the_layouts_packages_and_modules_are_reserved(name):
    with pytest.raises(rename.Refused, match="part of the plumbing"):
        rename.check_name(name)


def test_the_default_docker_hub_image_is_renamed_everywhere_and_stays_pushable(tmp_path):
    fork = make_fork(tmp_path)
    (fork / "sesam/systems/connector.conf.json").write_text(
        '{"_id": "connector", "type": "system:microservice",\n'
        ' "docker": {"image": "sesamcommunity/connector:1.0.0", "port": 5000}}\n'
    )
    (fork / ".github/workflows/ci.yml").write_text("env:\n  IMAGE: sesamcommunity/connector\n")
    (fork / "sesam/pipes/connector-people-endpoint.conf.json").write_text(
        '{"_id": "connector-people-endpoint", "type": "pipe",\n'
        ' "source": {"type": "dataset", "dataset": "connector-people"}}\n'
    )
    (fork / "README.md").write_text(
        README + "\n```sh\ndocker build -t sesamcommunity/connector:1.0.0 .\n"
        "docker push sesamcommunity/connector:1.0.0\n```\n"
        "A tag publishes `sesamcommunity/connector:1.0.0`; replace `sesamcommunity/connector`.\n"
    )
    assert run(fork, "acme-crm") == 0
    system = (fork / "sesam/systems/acme-crm.conf.json").read_text()
    assert '"image": "sesamcommunity/acme-crm:1.0.0"' in system
    assert "IMAGE: sesamcommunity/acme-crm\n" in (fork / ".github/workflows/ci.yml").read_text()
    readme = (fork / "README.md").read_text()
    assert "docker build -t sesamcommunity/acme-crm:1.0.0 ." in readme
    assert "docker push sesamcommunity/acme-crm:1.0.0" in readme
    assert "publishes `sesamcommunity/acme-crm:1.0.0`" in readme
    assert "replace `sesamcommunity/acme-crm`" in readme
    assert "sesamcommunity/connector" not in readme + system
    # A dataset named after the feed pipe follows the pipe's new id.
    endpoint = (fork / "sesam/pipes/acme-crm-people-endpoint.conf.json").read_text()
    assert '"dataset": "acme-crm-people"' in endpoint


def test_every_module_and_package_of_the_framework_and_the_tools_is_a_name_no_fork_takes():
    """A connector named after one of them would be taken for it (``connector_module``
    skips reserved names) or shadow it in a reader's eye: each one is reserved."""
    service = Path(rename.__file__).resolve().parents[1]
    names = {
        path.stem
        for package in (service / "framework", service / "tools")
        for path in package.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
        and not path.stem.startswith("_")
    }
    assert names - rename.RESERVED == set()
