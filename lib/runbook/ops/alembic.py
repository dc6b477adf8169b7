"""alembic on the server, in the app's directory and venv.

Example (in a notebook)::

    s.alembic.current()          # '0002'
    s.alembic.downgrade(1)       # more than one step needs approved_by
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

from runbook.result import Result

if TYPE_CHECKING:
    from runbook.core.context import OpsContext

_REV = re.compile(r"^([0-9a-zA-Z_]+)(?: \((.*)\))?")


class Alembic:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        app = ctx.profile.app
        self.dir = app.dir
        self.bin = f"{app.venv}/bin/alembic"

    def _probe(self, *args: str) -> Result:
        return self.ctx.probe([self.bin, *args], cwd=self.dir, label="alembic")

    def current(self) -> str | None:
        """The database's revision (None when the database has none)."""
        for line in self._probe("current").stdout.splitlines():
            m = _REV.match(line.strip())
            if m and not line.startswith("INFO"):
                return m.group(1)
        return None

    def heads(self) -> list[str]:
        """The head revision(s) of the migrations in the current checkout."""
        return [
            m.group(1)
            for line in self._probe("heads").stdout.splitlines()
            if (m := _REV.match(line.strip())) and not line.startswith("INFO")
        ]

    def history(self) -> str:
        return self._probe("history").stdout

    def upgrade(self, target: str = "head") -> Result:
        return self.ctx.run([self.bin, "upgrade", target], cwd=self.dir, label="alembic-upgrade")

    def downgrade(self, steps: int = 1) -> Result:
        """Undo `steps` migrations; more than one needs `approved_by` (runbook scenario 2)."""
        self.ctx.guards.check_downgrade(steps, f"alembic downgrade -{steps}")
        return self.ctx.run(
            [self.bin, "downgrade", f"-{int(steps)}"], cwd=self.dir, label="alembic-downgrade"
        )


# --------------------------------------------------------------------------
# expand/contract: what a rolling deploy may migrate while old code still runs
#
# In a rolling deploy the migration runs once, before the first batch, and the
# hosts not yet deployed keep serving the OLD code against the NEW schema for the
# whole roll (and again after a fleet rollback). So the migration may only
# *expand* (add tables, nullable columns, indexes): anything the old code still
# reads must survive it. The check reads the migration file's `upgrade()` with
# Python's `ast` (never imports it) and refuses these operations:
#
#   op.drop_table(T) / op.drop_column(T, C)          the old code's reads fail
#   op.rename_table(A, B)                            same, under another name
#   op.alter_column(T, C, new_column_name=N)         a rename
#   batch_op.drop_column / batch_op.alter_column(new_column_name=...)
#                                                    the same inside batch_alter_table
#   op.execute("... DROP TABLE|DROP COLUMN|RENAME ...")  the same in raw SQL
#
# unless the file says `runbook_phase = "contract"` at module level: the author's
# statement that the release before this one already stopped reading what goes
# (the contract half of expand/contract, shipped one release after the expand).
# An `op.execute` whose SQL is not a literal cannot be read and is refused too
# (fail closed), with the same way out.

CONTRACT_MARK = "runbook_phase"
_DESTRUCTIVE_CALLS = {"drop_table", "drop_column", "rename_table"}
_RAW_SQL = re.compile(
    r"\b(DROP\s+TABLE|DROP\s+COLUMN|RENAME\s+COLUMN|RENAME\s+TO|ALTER\s+TABLE\s+\S+\s+RENAME)\b",
    re.I,
)


def _literal(node: object) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def destructive_operations(text: str) -> list[str]:
    """What `upgrade()` of a migration file's text drops or renames, one phrase each.

    >>> destructive_operations('''
    ... def upgrade():
    ...     op.add_column("leads", sa.Column("score", sa.Integer))
    ...     op.drop_column("leads", "notes")
    ...     op.alter_column("leads", "name", new_column_name="full_name")
    ...     with op.batch_alter_table("lead_notes") as batch_op:
    ...         batch_op.drop_column("author")
    ...     op.execute("ALTER TABLE leads RENAME TO prospects")
    ... def downgrade():
    ...     op.drop_table("lead_scores")
    ... ''')  # doctest: +NORMALIZE_WHITESPACE
    ['drops column leads.notes (op.drop_column, line 4)',
     'renames column leads.name to full_name (op.alter_column, line 5)',
     'drops column lead_notes.author (batch_op.drop_column, line 7)',
     'raw SQL ALTER TABLE leads RENAME (op.execute, line 8)']
    """
    tree = ast.parse(text)
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    if upgrade is None:
        return []
    found: list[tuple[int, str]] = []
    # the table a `with op.batch_alter_table(T) as NAME:` block alters, by NAME
    batch_tables: dict[str, str] = {}
    for node in ast.walk(upgrade):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "batch_alter_table"
                    and isinstance(item.optional_vars, ast.Name)
                ):
                    table = _literal(call.args[0]) if call.args else None
                    batch_tables[item.optional_vars.id] = table or "?"
    for node in ast.walk(upgrade):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        fn = node.func.attr
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else "?"
        where = f"{owner}.{fn}, line {node.lineno}"
        args = [_literal(a) or "?" for a in node.args]
        in_batch = owner in batch_tables
        if in_batch:
            args = [batch_tables[owner], *args]
        kw = {k.arg: _literal(k.value) for k in node.keywords if k.arg}
        if fn == "drop_table" and args:
            found.append((node.lineno, f"drops table {args[0]} ({where})"))
        elif fn == "drop_column" and len(args) >= 2:
            found.append((node.lineno, f"drops column {args[0]}.{args[1]} ({where})"))
        elif fn == "rename_table" and len(args) >= 2:
            found.append((node.lineno, f"renames table {args[0]} to {args[1]} ({where})"))
        elif fn == "alter_column" and "new_column_name" in kw and len(args) >= 2:
            new = kw["new_column_name"] or "?"
            found.append((node.lineno, f"renames column {args[0]}.{args[1]} to {new} ({where})"))
        elif fn == "execute" and owner == "op":
            sql = _literal(node.args[0]) if node.args else None
            if sql is None:
                found.append((node.lineno, f"raw SQL not a string literal, unread ({where})"))
            elif m := _RAW_SQL.search(sql):
                head = sql[: m.end()].split(";")[-1].strip()
                found.append((node.lineno, f"raw SQL {' '.join(head.split())} ({where})"))
    return [what for _, what in sorted(found)]


def contract_phase(text: str) -> bool:
    """Whether the migration says `runbook_phase = "contract"` at module level.

    >>> contract_phase('revision = "0004"\\nrunbook_phase = "contract"\\n'), contract_phase("")
    (True, False)
    """
    for node in ast.parse(text).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if CONTRACT_MARK in names and _literal(node.value) == "contract":
                return True
    return False


def rolling_refusals(files: dict[str, str]) -> list[str]:
    """For the migrations a rolling deploy would apply ({file name: text}), why each that
    drops or renames what the old code may still read is refused ([] when all may run).

    >>> rolling_refusals({"0003_tags.py": "def upgrade():\\n    op.create_table('tags')\\n"})
    []
    >>> rolling_refusals({"0004_x.py": "def upgrade():\\n    op.drop_table('leads')\\n"})
    ['0004_x.py drops table leads (op.drop_table, line 2)']
    """
    out: list[str] = []
    for name, text in files.items():
        if contract_phase(text):
            continue
        out.extend(f"{name} {what}" for what in destructive_operations(text))
    return out
