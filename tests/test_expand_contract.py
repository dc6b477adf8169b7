"""The expand/contract check of a rolling deploy (runbook.ops.alembic.rolling_refusals):
a migration that drops or renames what the old code still reads is refused, unless it
says it is the contract phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.ops.alembic import contract_phase, destructive_operations, rolling_refusals

VERSIONS = Path(__file__).resolve().parents[1] / "sandbox/app/migrations/versions"

HEADER = 'revision = "0003"\ndown_revision = "0002"\n'


def migration(body: str, *, phase: str | None = None) -> str:
    mark = f"runbook_phase = {phase!r}\n" if phase else ""
    return (
        HEADER
        + mark
        + "\ndef upgrade() -> None:\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + "\ndef downgrade() -> None:\n    op.drop_table('lead_tags')\n"
    )


def test_the_app_s_own_migrations_are_expand_only() -> None:
    files = {p.name: p.read_text() for p in sorted(VERSIONS.glob("*.py"))}
    assert len(files) >= 2
    assert rolling_refusals(files) == []


def test_adding_tables_columns_and_indexes_passes() -> None:
    body = (
        "op.create_table('lead_tags', sa.Column('id', sa.BigInteger))\n"
        "op.add_column('leads', sa.Column('score', sa.Integer, nullable=True))\n"
        "op.create_index('ix_leads_score', 'leads', ['score'])\n"
        "op.alter_column('leads', 'score', server_default='0')\n"
        "op.execute('CREATE INDEX ix_x ON leads (id)')"
    )
    assert rolling_refusals({"0003_tags.py": migration(body)}) == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("op.drop_table('lead_notes')", "drops table lead_notes (op.drop_table, line 5)"),
        ("op.drop_column('leads', 'notes')", "drops column leads.notes (op.drop_column, line 5)"),
        (
            "op.rename_table('leads', 'prospects')",
            "renames table leads to prospects (op.rename_table, line 5)",
        ),
        (
            "op.alter_column('leads', 'name', new_column_name='full_name')",
            "renames column leads.name to full_name (op.alter_column, line 5)",
        ),
        (
            "with op.batch_alter_table('leads') as b:\n    b.drop_column('notes')",
            "drops column leads.notes (b.drop_column, line 6)",
        ),
        (
            "op.execute('ALTER TABLE leads DROP COLUMN notes')",
            "raw SQL ALTER TABLE leads DROP COLUMN (op.execute, line 5)",
        ),
        (
            "op.execute(sql)",
            "raw SQL not a string literal, unread (op.execute, line 5)",
        ),
    ],
)
def test_a_drop_or_rename_in_upgrade_is_refused_naming_file_line_and_what(
    body: str, said: str
) -> None:
    assert rolling_refusals({"0003_x.py": migration(body)}) == [f"0003_x.py {said}"]


def test_drops_in_downgrade_do_not_count() -> None:
    # every migration's downgrade drops what its upgrade made: that is not the roll
    text = migration("op.create_table('lead_tags')")
    assert "drop_table" in text
    assert destructive_operations(text) == []


def test_the_contract_phase_mark_lets_a_drop_through() -> None:
    text = migration("op.drop_column('leads', 'notes')", phase="contract")
    assert contract_phase(text)
    assert rolling_refusals({"0004_contract.py": text}) == []
    # any other value is not the mark
    other = migration("op.drop_column('leads', 'notes')", phase="expand")
    assert not contract_phase(other)
    assert rolling_refusals({"0004_x.py": other}) != []
