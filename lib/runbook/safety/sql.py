"""What a psql invocation does to which database, read with PostgreSQL's own parser (pglast).

psql scripts are split the way psql splits them: SQL (quotes, dollar quotes
and comments kept whole) and backslash meta-commands, which run to the end
of the line. The SQL is parsed by pglast, which is PostgreSQL's parser
compiled as a library, so `DROP/**/DATABASE` and `U&"d\\0065alix"` read as the
server reads them.

Example::

    >>> [type(s).__name__ for s in statements("SELECT 1; DROP/**/DATABASE x")]
    ['SelectStmt', 'DropdbStmt']
    >>> split_script("SELECT 1;\\n\\\\i /tmp/x.sql\\nSELECT ';\\\\!'")
    (['SELECT 1;\\n', "\\nSELECT ';\\\\!'"], [('i', '/tmp/x.sql')])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

# psql options that take a value (short letters, long names)
PSQL_SHORT_VALUE = set("cdfFhLopPRTUv")
PSQL_LONG_VALUE = {
    "--command",
    "--dbname",
    "--file",
    "--field-separator",
    "--host",
    "--log-file",
    "--output",
    "--port",
    "--pset",
    "--record-separator",
    "--table-attr",
    "--username",
    "--set",
    "--variable",
}
# meta-commands that only read or set psql's own display state
SAFE_META = re.compile(
    r"^(d[A-Za-z+]*|l\+?|list|x|timing|pset|a|t|T|C|f|H|echo|qecho|warn|q|quit|conninfo|set"
    r"|unset|encoding|errverbose|prompt|sf\+?|sv\+?|p|print|r|reset|s|copyright|h|help|\?"
    r"|if|elif|else|endif|bind|getenv|setenv|cd|watch|gset|g|gx|gdesc|o|out|w|write|i|ir"
    r"|include|include_relative|c|connect|copy|!|z|lo_list|dconfig"
    # pg_dump 17.6+ brackets a dump with these: they only forbid meta-commands
    r"|restrict|unrestrict)$"
)


@dataclass
class Invocation:
    """A psql command line, read: the database, the SQL it runs and where from."""

    database: str | None = None
    database_known: bool = True
    commands: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    reads_stdin: bool = False


def read_psql_args(args: list[str], env: dict[str, str | None]) -> Invocation:
    """psql's options, in any order (psql permutes them), and the database it connects to.

    >>> read_psql_args(["-X", "-c", "select 1", "dealix"], {}).database
    'dealix'
    >>> read_psql_args(["postgresql://u@h:5432/dealix?sslmode=require"], {}).database
    'dealix'
    >>> read_psql_args(["-d", "host=/tmp dbname=dealix"], {}).database
    'dealix'
    >>> read_psql_args([], {"PGDATABASE": "dealix"}).database
    'dealix'
    """
    inv = Invocation()
    positional: list[str] = []
    db: str | None = None
    user: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        val: str | None = None
        opt = ""
        if a == "--":
            positional += args[i + 1 :]
            break
        if a.startswith("--"):
            opt, eq, v = a.partition("=")
            if opt in PSQL_LONG_VALUE:
                val = v if eq else (args[i + 1] if i + 1 < len(args) else "")
                i += 0 if eq else 1
        elif a.startswith("-") and len(a) > 1:
            for j, ch in enumerate(a[1:], start=1):
                if ch in PSQL_SHORT_VALUE:
                    opt = "-" + ch
                    val = a[j + 1 :] or (args[i + 1] if i + 1 < len(args) else "")
                    if not a[j + 1 :]:
                        i += 1
                    break
        else:
            positional.append(a)
        if val is not None:
            if opt in ("-c", "--command"):
                inv.commands.append(val)
            elif opt in ("-f", "--file"):
                inv.files.append(val)
            elif opt in ("-d", "--dbname"):
                db = val
            elif opt in ("-U", "--username"):
                user = val
        i += 1
    if db is None and positional:
        db = positional[0]
    if user is None and len(positional) > 1:
        user = positional[1]
    if db is not None:
        inv.database, inv.database_known = conninfo_database(db)
    elif env.get("PGDATABASE") is not None or "PGDATABASE" in env:
        val = env.get("PGDATABASE")
        inv.database, inv.database_known = (val, val is not None)
    else:
        # psql's default: the user name; unknown here (and the server's own
        # environment may set PGDATABASE)
        inv.database, inv.database_known = None, False
    if (not inv.commands and not inv.files) or "-" in inv.files:
        inv.reads_stdin = True
    return inv


def conninfo_database(value: str) -> tuple[str | None, bool]:
    """The database a psql `dbname` argument names: a plain name, `k=v` pairs or a URI.

    >>> conninfo_database("postgres://localhost/dealix"), conninfo_database("service=x")
    (('dealix', True), (None, False))
    """
    if value.startswith(("postgres://", "postgresql://")):
        path = urlparse(value).path.lstrip("/")
        return (unquote(path), True) if path else (None, False)
    if "=" in value:
        pairs = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", value))
        if "dbname" in pairs:
            name = pairs["dbname"].strip("'")
            return conninfo_database(name) if "=" in name or "://" in name else (name, True)
        return None, False
    return value, True


_COPY_FROM_STDIN = re.compile(r"\bcopy\b[^;]*\bfrom\s+stdin\b[^;]*;$", re.I | re.S)


def split_script(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    r"""Split a psql script into SQL chunks and meta-commands (name, argument text).

    >>> split_script("select 1 \\gexec")
    (['select 1 '], [('gexec', '')])
    """
    sql: list[str] = []
    metas: list[tuple[str, str]] = []
    buf: list[str] = []
    since = 0  # where the statement being read starts in buf
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ";" and not _COPY_FROM_STDIN.search("".join(buf[since:]) + ";"):
            buf.append(ch)
            since = len(buf)
            i += 1
            continue
        if ch == "'" or ch == '"':
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            buf.append(text[i : j + 1])
            i = j + 1
            continue
        if ch == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            buf.append(text[i:j])
            i = j
            continue
        if ch == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            buf.append(text[i:j])
            i = j
            continue
        if ch == "$":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if m:
                tag = m.group(0)
                end = text.find(tag, i + len(tag))
                end = n if end < 0 else end + len(tag)
                buf.append(text[i:end])
                i = end
                continue
        if ch == ";" and _COPY_FROM_STDIN.search("".join(buf[since:]) + ";"):
            # COPY ... FROM stdin: the data lines follow, up to a line `\.`
            buf.append(";")
            sql.append("".join(buf))
            buf, since = [], 0
            end = text.find("\n\\.", i)
            i = n if end < 0 else (text.find("\n", end + 1) if text.find("\n", end + 1) >= 0 else n)
            continue
        if ch == "\\":
            m = re.match(r"\\([A-Za-z?!+]+|!|\\)", text[i:])
            if m and m.group(1) == "\\":
                # `\\` separates meta-commands from what follows on the line
                i += 2
                continue
            j = text.find("\n", i)
            j = n if j < 0 else j
            line = text[i + 1 : j]
            if line.startswith("!"):
                name, arg = "!", line[1:]
            else:
                name, _, arg = line.partition(" ")
                name = re.match(r"[A-Za-z?+]*", name).group(0) if name else ""  # type: ignore[union-attr]
                arg = line[len(name) :]
            # a `\\` inside the line ends this meta-command
            if "\\\\" in arg and name != "!":
                arg, _, rest = arg.partition("\\\\")
                sql.append("".join(buf))
                buf = [rest]
            else:
                sql.append("".join(buf))
                buf = []
            metas.append((name, arg.strip()))
            i = j
            continue
        buf.append(ch)
        i += 1
    sql.append("".join(buf))
    return [s for s in sql if s.strip()], metas


def statements(sql: str) -> list[Any]:
    """The parsed statements of SQL text (raises pglast's ParseError when one does not parse).

    When the whole text does not parse, each statement (split by PostgreSQL's own
    scanner) is parsed alone, so one bad statement does not hide the others: the
    error is raised after them, as `PartialParse` carrying what did parse.
    """
    import pglast

    try:
        return [raw.stmt for raw in pglast.parse_sql(sql)]
    except pglast.parser.ParseError as whole:
        parsed: list[Any] = []
        first: Exception | None = None
        try:
            pieces = pglast.split(sql, with_parser=False)
        except Exception:
            raise whole from None
        for piece in pieces:
            try:
                parsed += [raw.stmt for raw in pglast.parse_sql(piece)]
            except pglast.parser.ParseError as exc:
                first = first or exc
        raise PartialParse(parsed, first or whole) from None


class PartialParse(Exception):
    """Some statements did not parse; `parsed` holds those that did."""

    def __init__(self, parsed: list[Any], error: Exception):
        super().__init__(str(error))
        self.parsed = parsed


_READ_ONLY = {
    "SelectStmt",
    "VariableShowStmt",
    "VariableSetStmt",
    "TransactionStmt",
    "ExplainStmt",
}


def is_read_only(stmt: Any) -> bool:
    """A statement that changes nothing in the database (SELECT without INTO, SHOW, SET, ...)."""
    name = type(stmt).__name__
    if name == "SelectStmt":
        return getattr(stmt, "intoClause", None) is None
    if name == "ExplainStmt":
        opts = [getattr(o, "defname", "") for o in (getattr(stmt, "options", None) or ())]
        return "analyze" not in opts or is_read_only(stmt.query)
    if name == "CopyStmt":
        return not stmt.is_from and not stmt.filename and not stmt.is_program
    return name in _READ_ONLY


_REACHING = re.compile(r"\b(dblink\w*|lo_export|lo_import|pg_file_\w+|pg_read_\w*file)\s*\(", re.I)
_PROGRAM = re.compile(r"\bprogram\b", re.I)


def reaches_outside(stmt: Any, text: str) -> str | None:
    """Why a statement reaches beyond its own database (a program, a file, another database)."""
    name = type(stmt).__name__
    if name == "CopyStmt" and stmt.is_program:
        return f"COPY ... PROGRAM {stmt.filename!r} runs a shell command on the server"
    m = _REACHING.search(text)
    if m:
        return f"{m.group(1)}() reaches files or other databases from SQL"
    if name in ("DoStmt", "CreateFunctionStmt") and _PROGRAM.search(text):
        return "a function body that runs COPY ... PROGRAM (a shell command on the server)"
    return None
