"""docs/safety.md's per-rule, per-layer table is the one the tests give (no sandbox).

benchmarks/safety_counts.py counts the guard's forms by running the guard and
lists the armor's and the tripwire's held forms by test; these tests keep that
list honest against the test files and the docs' table against the list.
"""

from __future__ import annotations

import ast
import sys

from runbook.sandbox import project_root

ROOT = project_root()
sys.path.insert(0, str(ROOT / "benchmarks"))

import safety_counts as sc  # noqa: E402

START, END = "<!-- safety-counts:start -->", "<!-- safety-counts:end -->"


def _tests_in(name: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / name).read_text())
    return {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }


def _check_listing(table, not_forms: dict[str, str], files: list[str]) -> None:
    defined = {name: _tests_in(name) for name in files}
    for rule, file, test, acts in table:
        assert rule in sc.RULES, rule
        assert acts, (file, test)
        assert test in defined[file], f"{file}::{test} is listed in safety_counts but not defined"
    everywhere = set().union(*defined.values())
    for test in not_forms:
        assert test in everywhere, f"{test} is listed as not a form but is not defined"
    listed = {t for _, _, t, _ in table} | set(not_forms)
    unlisted = sorted(everywhere - listed)
    assert not unlisted, f"new tests, count them in benchmarks/safety_counts.py: {unlisted}"


def test_the_armor_listing_follows_its_test_files() -> None:
    _check_listing(sc.ARMOR, sc.ARMOR_NOT_FORMS, ["test_armor.py", "test_twin_armor.py"])


def test_the_tripwire_listing_follows_its_test_files() -> None:
    _check_listing(sc.TRIPWIRE, sc.TRIPWIRE_NOT_FORMS, ["test_tripwire.py", "test_twin_safety.py"])


def test_every_guard_form_is_counted_under_a_known_rule() -> None:
    from test_guard_forms import FORMS

    counted = sc.guard_counts()
    assert sum(counted.values()) == len(FORMS)
    assert set(counted) <= set(sc.RULES), set(counted) - set(sc.RULES)


def test_the_docs_table_is_the_counted_one() -> None:
    text = (ROOT / "docs" / "safety.md").read_text()
    assert START in text and END in text, "docs/safety.md lacks the safety-counts markers"
    shown = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert shown == sc.render(), (
        "docs/safety.md's per-rule table differs from the tests: "
        "paste `.venv/bin/python benchmarks/safety_counts.py` between its markers"
    )
