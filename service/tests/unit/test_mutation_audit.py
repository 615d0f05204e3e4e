"""The mutation audit's generator (service/tools/mutation_audit.py): the audit itself is
too slow for CI, so its mutants are checked here: what it changes, what it leaves alone,
and keys that survive edits elsewhere in the module."""

from __future__ import annotations

import ast
import re
import shutil
import textwrap

import pytest

from service.tools import mutation_audit
from service.tools.mutation_audit import EQUIVALENTS
from service.tools.mutation_audit import MODULES
from service.tools.mutation_audit import ROOT
from service.tools.mutation_audit import baseline
from service.tools.mutation_audit import entry_file
from service.tools.mutation_audit import generate
from service.tools.mutation_audit import module_mutants
from service.tools.mutation_audit import read_equivalents

SOURCE = textwrap.dedent(
    '''
    """Module docstring."""

    import logging

    log = logging.getLogger(__name__)
    LIMIT = 10


    def check(value: int, names: list[str] | None = None) -> str:
        """Docstring."""
        if value < LIMIT and names is not None:
            log.info("value %s is fine", value)
            return "small"
        if not names:
            raise ValueError(f"no names for {value}")
        total = value + 1
        return "large" if total >= 2 else "tiny"
    '''
)


def changes(source=SOURCE):
    return {(m.kind, m.change) for m in generate("demo", "demo.py", source)}


def test_each_kind_of_single_point_change_is_made():
    made = changes()
    for expected in [
        ("flip compare", "`value < LIMIT` -> `value <= LIMIT`"),
        ("flip compare", "`names is not None` -> `names is None`"),
        ("flip compare", "`total >= 2` -> `total > 2`"),
        (
            "swap and/or",
            "`value < LIMIT and names is not None` -> `value < LIMIT or names is not None`",
        ),
        (
            "negate condition",
            "`value < LIMIT and names is not None` -> `not (value < LIMIT and names is not None)`",
        ),
        ("remove not", "`not names` -> `names`"),
        ("delete return", "`return 'small'` -> `pass`"),
        ("delete raise", "`raise ValueError(f'no names for {value}')` -> `pass`"),
        ("delete call", "`log.info('value %s is fine', value)` -> `pass`"),
        ("change number", "`10` -> `11`"),
        ("swap arithmetic", "`value + 1` -> `value - 1`"),
        ("change string", "`'small'` -> `''`"),
    ]:
        assert expected in made, expected


def test_text_that_is_not_code_is_left_alone():
    touched = " ".join(change for _, change in changes())
    assert "docstring" not in touched.lower()
    assert "'value %s is fine'" not in touched.replace("log.info('value %s is fine', value)", "")
    assert "'no names for" not in touched.replace("raise ValueError(f'no names for {value}')", "")
    assert "list[str]" not in touched  # annotations
    assert "'__main__'" not in touched


def test_every_mutant_is_valid_python_that_differs_from_the_original():
    for mutant in generate("demo", "demo.py", SOURCE):
        mutated = mutant.apply(SOURCE)
        assert mutated != SOURCE
        ast.parse(mutated)


def test_mutants_of_non_ascii_lines_land_on_their_node():
    source = 'def f(x):\n    return "ø" if x == "å" else 0\n'
    for mutant in generate("demo", "demo.py", source):
        ast.parse(mutant.apply(source))
    assert ("flip compare", "`x == 'å'` -> `x != 'å'`") in changes(source)


def test_keys_survive_edits_elsewhere_and_repeats_are_numbered():
    keys = [m.key for m in generate("demo", "demo.py", SOURCE)]
    assert len(keys) == len(set(keys))
    shifted = SOURCE.replace("LIMIT = 10\n", "LIMIT = 10\nOTHER = 'x'\n\n\n")
    assert set(keys) <= {m.key for m in generate("demo", "demo.py", shifted)}
    assert "demo.py check: `return 'small'` -> `pass`" in keys
    repeated = "def f(a):\n    return a + 1 + 1\n"
    assert any(k.endswith(" #2") for k in (m.key for m in generate("demo", "d.py", repeated)))


def test_the_protocol_modules_give_valid_mutants_and_the_equivalents_file_reads():
    mutants = module_mutants(list(MODULES))
    assert {m.module for m in mutants} == set(MODULES)
    sources = {
        name: (ROOT / path).read_text(encoding="utf-8") for name, (path, _) in MODULES.items()
    }
    for mutant in mutants:
        ast.parse(mutant.apply(sources[mutant.module]))
    for _, tests in MODULES.values():
        assert all((ROOT / entry_file(test)).exists() for test in tests), tests
    keys = {m.key for m in mutants}
    listed = read_equivalents(EQUIVALENTS)
    assert set(listed) <= keys, sorted(set(listed) - keys)  # no stale entry


def failing_copy(tmp_path, test_source: str):
    """A copy of the repository as the audit makes one, whose only test is ``test_source``."""
    copy = tmp_path / "repo"
    (copy / "service" / "tests" / "unit").mkdir(parents=True)
    shutil.copy(ROOT / "service" / "tests" / "pytest.ini", copy / "service" / "tests")
    test = copy / "service" / "tests" / "unit" / "test_broken.py"
    test.write_text(textwrap.dedent(test_source), encoding="utf-8")
    return copy, str(test.relative_to(copy))


def test_tests_that_fail_without_a_mutant_are_shown_not_just_named(tmp_path, monkeypatch):
    copy, test = failing_copy(
        tmp_path,
        """
        def test_the_answer():
            assert 6 * 7 == 43, "the baseline's own failure"
        """,
    )
    monkeypatch.setitem(MODULES, "transit", ("service/framework/transit.py", (test,)))
    with pytest.raises(SystemExit) as stopped:
        baseline(copy, "transit")
    message = str(stopped.value)
    assert "the baseline's own failure" in message
    assert "test_broken.py::test_the_answer" in message
    assert message.splitlines()[-1].startswith("the tests of transit fail without any mutant")


def test_a_test_over_the_per_test_limit_says_so(tmp_path, monkeypatch):
    copy, test = failing_copy(
        tmp_path,
        """
        import time

        def test_slow():
            time.sleep(30)
        """,
    )
    monkeypatch.setitem(MODULES, "transit", ("service/framework/transit.py", (test,)))
    monkeypatch.setattr(mutation_audit, "TEST_TIMEOUT", 1)
    with pytest.raises(SystemExit) as stopped:
        baseline(copy, "transit")
    assert "Timeout (>1.0s)" in str(stopped.value)
    assert "each test has 1 s here" in str(stopped.value)


def test_every_framework_module_with_code_is_audited_with_tests_of_its_own():
    """A module added to the framework without an entry would never be audited: a fork's
    maintainers run the audit from MODULES alone."""
    framework = ROOT / "service" / "framework"
    with_code = {
        path.stem
        for path in framework.glob("*.py")
        if generate(path.stem, str(path), path.read_text(encoding="utf-8"))
    }
    # __init__.py holds only __version__, whose one mutant (the string emptied) the
    # release tests kill: the newest changelog section must be that version.
    assert with_code - {"__init__"} == set(MODULES)
    for name, (path, tests) in MODULES.items():
        assert path == f"service/framework/{name}.py"
        assert tests and len(set(tests)) == len(tests), name


def test_skip_equivalent_runs_only_the_unlisted_mutants_and_scores_the_same(monkeypatch, capsys):
    listed, other = module_mutants(["transit"])[:2]
    monkeypatch.setattr(mutation_audit, "module_mutants", lambda names: [listed, other])
    monkeypatch.setattr(mutation_audit, "read_equivalents", lambda: {listed.key: "a reason"})
    ran = []

    def audit(mutants, workers):
        ran.extend(mutants)
        return [mutation_audit.Result(m, "killed", 1.0) for m in mutants], {}

    monkeypatch.setattr(mutation_audit, "audit", audit)
    assert mutation_audit.main(["transit", "--skip-equivalent"]) == 0
    assert ran == [other]
    out = capsys.readouterr().out
    assert re.search(r"transit\s+2\s+1\s+1\s+0\s+100\.0%", out), out
