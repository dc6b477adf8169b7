"""What each layer of issue 19 stopped, per rule, counted from the tests themselves.

    .venv/bin/python benchmarks/safety_counts.py            # prints the table
    .venv/bin/python benchmarks/safety_counts.py --json     # the counts as JSON

The guard's columns are computed: each form of tests/test_guard_forms.py is
given to the guard now and counted under the rule it is refused with; the
forms that tests/test_guard_sandbox.py and tests/test_twin_safety.py send
through a real session are counted by the rule their row expects (those tests
assert it). The armor's and the tripwire's tests damage objects on the real
sandbox or twin with their own code (a root shell's commands, not a table), so
their forms are listed below by test, one entry per destructive act the test
shows held; tests/test_safety_counts.py checks that each named test exists,
that every test in those files is either listed or said not to be a form, and
that docs/safety.md's table is the one `render()` prints, so the numbers cannot
drift from the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "lib", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# the do-not-touch rules, in docs/safety.md's order, then the guard's own two
RULES = [
    "keep-protected-files",
    "env-edit-only-llm-priority",
    "no-force-delete-branch",
    "no-push-to-main",
    "no-commit-on-server",
    "no-restore-into-production-db",
    "keep-corrupt-db-7-days",
    "one-downgrade-step",
    "no-delete-active-wal",
    "keep-armor",
    "opaque-command",
]

# (rule, test file, test function, the destructive acts it shows held)
ARMOR: list[tuple[str, str, str, list[str]]] = [
    (
        "keep-protected-files",
        "test_armor.py",
        "test_rm_and_an_interpreter_cannot_delete_the_protected_file",
        ["rm -f", "python3 os.remove(...)", "echo > (overwrite)"],
    ),
    (
        "keep-protected-files",
        "test_twin_armor.py",
        "test_armor_on_the_twin_holds_what_a_root_shell_tries",
        ["rm -f over SSH", "python3 os.remove(...) over SSH"],
    ),
    (
        "no-force-delete-branch",
        "test_armor.py",
        "test_plumbing_cannot_delete_or_move_the_kept_branch",
        ["branch -D", "update-ref -d", "branch -M", "update-ref to HEAD"],
    ),
    (
        "no-force-delete-branch",
        "test_twin_armor.py",
        "test_armor_on_the_twin_holds_what_a_root_shell_tries",
        ["update-ref -d over SSH"],
    ),
    (
        "no-commit-on-server",
        "test_armor.py",
        "test_no_commit_on_the_server_even_with_no_verify_or_plumbing",
        ["commit --no-verify", "commit-tree + update-ref HEAD"],
    ),
    (
        "no-push-to-main",
        "test_armor.py",
        "test_the_origin_refuses_a_push_to_main",
        ["push -u origin HEAD while on main"],
    ),
    (
        "no-push-to-main",
        "test_twin_armor.py",
        "test_armor_on_the_twin_holds_what_a_root_shell_tries",
        ["push origin HEAD:main from a clone"],
    ),
    # the drop itself goes through (no armor stops a superuser's DROP DATABASE):
    # what holds is the evidence, an immutable pg_dump taken at the rename
    (
        "keep-corrupt-db-7-days",
        "test_armor.py",
        "test_corrupt_db_dump_survives_a_drop",
        ["DROP DATABASE by a root psql (the dump survives, not the database)"],
    ),
]

# tests in the armor files that are not a destructive form held by the armor
ARMOR_NOT_FORMS = {
    "test_the_runbooks_preflight_installs_every_piece": "installation, read back",
    "test_the_guard_refuses_lifting_the_armor": "the guard's rule keep-armor (layer 1)",
    "test_health_check_turns_red_when_a_piece_is_lifted": "the signal, not a form",
    "test_github_branch_protection_is_read_back": "production's piece, read back",
    "test_a_filesystem_without_the_attribute_is_not_available_never_passed": "a platform",
    "test_the_hooks_carry_the_mark": "the hooks' mark",
    "test_a_read_cannot_write_least_privilege": "least privilege: no rule's object",
}

TRIPWIRE: list[tuple[str, str, str, list[str]]] = [
    (
        "keep-protected-files",
        "test_tripwire.py",
        "test_a_deleted_protected_file_is_put_back_from_the_copy",
        ["deleted (put back)"],
    ),
    (
        "keep-protected-files",
        "test_tripwire.py",
        "test_a_protected_file_overwritten_is_put_back",
        ["overwritten (put back)"],
    ),
    (
        "keep-protected-files",
        "test_twin_safety.py",
        "test_the_tripwire_on_the_twin_puts_back_what_a_root_shell_destroyed",
        ["chattr -i + rm over SSH (put back)"],
    ),
    (
        "env-edit-only-llm-priority",
        "test_tripwire.py",
        "test_env_changed_outside_is_put_back_but_the_llm_edit_is_kept",
        ["another line edited (put back)"],
    ),
    (
        "env-edit-only-llm-priority",
        "test_tripwire.py",
        "test_a_step_allowed_to_rotate_keys_changes_only_those",
        ["another line edited after an allowed rotation (put back)"],
    ),
    (
        "env-edit-only-llm-priority",
        "test_tripwire.py",
        "test_outside_the_allowance_another_key_still_trips",
        ["a key outside the allowance (put back)"],
    ),
    (
        "no-force-delete-branch",
        "test_tripwire.py",
        "test_kept_branch_deleted_on_the_server_and_in_origin_is_put_back",
        ["update-ref -d on the server and in origin, hooks lifted (put back)"],
    ),
    (
        "no-force-delete-branch",
        "test_twin_safety.py",
        "test_the_tripwire_on_the_twin_puts_back_what_a_root_shell_destroyed",
        ["update-ref -d over SSH, hooks lifted (put back)"],
    ),
    (
        "no-commit-on-server",
        "test_tripwire.py",
        "test_a_commit_on_the_server_is_taken_off_main",
        ["commit with hooks lifted (taken off main)"],
    ),
    (
        "no-push-to-main",
        "test_tripwire.py",
        "test_a_push_to_main_from_the_server_is_put_back_in_origin",
        ["push from the server, origin's hook lifted (put back)"],
    ),
    (
        "no-restore-into-production-db",
        "test_tripwire.py",
        "test_production_database_renamed_outside_restore_incident_is_renamed_back",
        ["ALTER DATABASE dealix RENAME (renamed back)"],
    ),
    (
        "no-restore-into-production-db",
        "test_tripwire.py",
        "test_production_dropped_trips_even_in_the_incident_restore",
        ["DROP DATABASE of production inside the incident restore (caught)"],
    ),
    (
        "keep-corrupt-db-7-days",
        "test_tripwire.py",
        "test_a_young_corrupt_database_dropped_trips_an_old_one_does_not",
        ["DROP DATABASE of a young one (caught, cannot be put back)"],
    ),
    (
        "keep-corrupt-db-7-days",
        "test_twin_safety.py",
        "test_the_tripwire_on_the_twin_puts_back_what_a_root_shell_destroyed",
        ["DROP DATABASE by a root psql over SSH (caught, cannot be put back)"],
    ),
    (
        "one-downgrade-step",
        "test_tripwire.py",
        "test_alembic_two_steps_down_trips_one_does_not",
        ["a second step down (caught, not undone)"],
    ),
    (
        "no-delete-active-wal",
        "test_tripwire.py",
        "test_an_active_wal_segment_deleted_trips",
        ["an active segment deleted (caught, cannot be put back)"],
    ),
]

TRIPWIRE_NOT_FORMS = {
    "test_restore_incident_may_swap_the_production_database": "an allowed change",
    "test_two_steps_down_with_an_approver_do_not_trip": "an allowed change",
    "test_a_clean_run_records_the_tripwire_and_removes_its_copies": "the record",
    "test_probes_and_dry_runs_do_not_arm_the_tripwire": "when it arms",
    "test_outcome_tripped_has_its_own_exit_code": "the exit code",
    "test_wal_rule_spares_what_postgres_recycles_below_redo": "comparison, no server",
    "test_wal_is_not_judged_while_postgres_does_not_answer": "comparison, no server",
    "test_production_database_rule_follows_the_procedure": "comparison, no server",
    "test_origin_main_rewound_trips_a_fast_forward_does_not": "comparison, no server",
    "test_parse_reads_the_scripts_lines": "the probe's parser",
    "test_an_origin_unreachable_at_the_baseline_is_not_asked_again": "the probe",
    "test_one_form_per_class_is_refused_on_the_twin_and_nothing_moves": "the guard (layer 1)",
}

# where a layer cannot hold a rule at all, and why (shown in the table instead of 0)
NOT_APPLICABLE = {
    ("armor", "env-edit-only-llm-priority"): "n/a: .env must stay writable (scenario 4)",
    ("armor", "no-restore-into-production-db"): "n/a: a superuser may drop it",
    ("armor", "one-downgrade-step"): "n/a: the schema is the app's",
    ("armor", "no-delete-active-wal"): "n/a: Postgres writes pg_wal",
    ("armor", "keep-armor"): "n/a: root can lift it",
    ("armor", "opaque-command"): "n/a: a guard rule",
    ("tripwire", "keep-armor"): "n/a: a guard rule",
    ("tripwire", "opaque-command"): "n/a: a guard rule",
}

# a count that needs its qualifier beside it
QUALIFIED = {
    ("armor", "keep-corrupt-db-7-days"): "evidence only: the dump survives the drop",
}


def guard_counts() -> Counter[str]:
    """Each form of test_guard_forms.FORMS given to the guard now, per refusing rule."""
    from test_guard_forms import FORMS, guards

    from runbook.errors import Forbidden

    stopped: Counter[str] = Counter()
    for _klass, _rule, command in FORMS:
        try:
            guards().check_command(command)
        except Forbidden as exc:
            stopped[exc.rule] += 1
    return stopped


def session_counts() -> tuple[Counter[str], Counter[str]]:
    """The forms sent through a real session: on the sandbox, on the twin (by their row's rule)."""
    from test_guard_sandbox import forms
    from test_twin_safety import FORMS as TWIN_FORMS

    st = {"app_dir": "/opt/dealix", "backup_branch": "kept", "psql": "psql", "backups_dir": "/b"}
    sandbox = Counter(rule for _, rule, _ in forms(st))
    twin = Counter(rule for _, rule, _ in TWIN_FORMS)
    return sandbox, twin


def listed(table: list[tuple[str, str, str, list[str]]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for rule, _file, _test, acts in table:
        out[rule] += len(acts)
    return out


def counts() -> dict[str, dict[str, int]]:
    sandbox, twin = session_counts()
    return {
        "guard": dict(guard_counts()),
        "guard, sandbox session": dict(sandbox),
        "guard, twin session": dict(twin),
        "armor": dict(listed(ARMOR)),
        "tripwire": dict(listed(TRIPWIRE)),
    }


def render() -> str:
    """The markdown table docs/safety.md carries (between its safety-counts markers)."""
    c = counts()
    head = (
        "| rule | guard (forms table) | guard through a session: sandbox / twin "
        "| armor (sandbox + twin) | tripwire (sandbox + twin) |"
    )
    lines = [head, "|---|---|---|---|---|"]
    total = Counter[str]()
    for rule in RULES:
        cells = [f"`{rule}`", str(c["guard"].get(rule, 0))]
        sandbox, twin = c["guard, sandbox session"], c["guard, twin session"]
        cells.append(f"{sandbox.get(rule, 0)} / {twin.get(rule, 0)}")
        for layer in ("armor", "tripwire"):
            n = c[layer].get(rule, 0)
            if n == 0:
                cells.append(NOT_APPLICABLE.get((layer, rule), "0"))
            elif (layer, rule) in QUALIFIED:
                cells.append(f"{n} ({QUALIFIED[layer, rule]})")
            else:
                cells.append(str(n))
        for layer in c:
            total[layer] += c[layer].get(rule, 0)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"| all | {total['guard']} | {total['guard, sandbox session']} / "
        f"{total['guard, twin session']} | {total['armor']} | {total['tripwire']} |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args()
    print(json.dumps(counts(), indent=1) if args.json else render())


if __name__ == "__main__":
    main()
