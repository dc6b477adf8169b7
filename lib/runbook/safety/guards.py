"""The runbook's rules, enforced in code: each a named guard that refuses with `Forbidden`.

Guards see every command the session sends, read by the shell reader
(runbook.safety.shell), (the library's own operations
and raw shell strings alike) before it runs, in dry-run too, so a plan
that would break a rule is refused before anything changes. Wrappers are
read through (sudo, env, nice, timeout, nohup, su -c, eval, `$(...)`, the
scripts of `sh -c` / `bash -lc`, a script fed to `bash -s`), and relative
paths are resolved against a preceding `cd`.

| rule | refuses | runbook |
|---|---|---|
| no-push-to-main | `git push` to a protected branch (or without a refspec) | Appendix B; scenario 2 step 5 |
| no-commit-on-server | `git commit` on the target: changes flow through a PR | section 0, "First rule"; scenario 2 step 5 |
| keep-protected-files | deleting, moving, truncating or overwriting a do-not-touch file, also through a parent directory (`rm -r`, `rsync --delete`, `git clean -f`) or a glob | Appendix B |
| no-force-delete-branch | `git branch -D`, `push --delete`, `update-ref -d` of a kept branch | Appendix B |
| keep-corrupt-db-7-days | dropping a `dealix_corrupt_*` database younger than 7 days | Appendix B |
| one-downgrade-step | more than one migration step downgraded in a run without `approved_by` | scenario 2 step 3 |
| no-restore-into-production-db | restoring into, dropping or renaming the production database outside the incident restore | scenario 5 preflight |
| env-edit-only-llm-priority | any in-place edit of `.env` but `LLM_PROVIDER_PRIORITY` (backed up first; a list of provider names only) | scenario 4 step 4 |
| no-delete-active-wal | deleting or moving anything under `pg_wal` / `pg_xlog`, or the data directory or a parent of it | scenario 3 step 3 |
| keep-armor | `chattr -i` (or `=` without `i`) on a do-not-touch file or an evidence dump, or on a directory above one with `-R` | Appendix B; runbook.ops.armor |

Example::

    >>> from runbook.core.profile import load_profile
    >>> g = Guards(load_profile("production"))
    >>> g.check_command("git push origin main")
    Traceback (most recent call last):
    ...
    runbook.errors.Forbidden: refused by rule 'no-push-to-main': ...
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import PurePosixPath

from runbook.core.profile import Profile
from runbook.errors import Forbidden, ParameterError
from runbook.safety.shell import (
    GLOB,
    SimpleCommand,
    dynamic,
    expand_braces,
    may_reach,
    parse_commands,
    resolve,
)


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    text: str


RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "no-push-to-main",
            "Appendix B: `main` branch: protected, no direct push",
            "no push to a protected branch",
        ),
        Rule(
            "no-commit-on-server",
            "Section 0: never edit code or .env directly on the server; "
            "scenario 2 step 5: no direct commits to main",
            "no commits on the server",
        ),
        Rule(
            "keep-protected-files",
            "Appendix B: /opt/dealix/.env.pre-v3.0.0.bak: never delete",
            "do-not-touch files are never deleted, moved or overwritten",
        ),
        Rule(
            "no-force-delete-branch",
            "Appendix B: server-backup-20260423-084442 branch: do not force-delete",
            "kept branches are never force-deleted",
        ),
        Rule(
            "keep-corrupt-db-7-days",
            "Appendix B: dealix_corrupt_* databases: keep for 7 days",
            "corrupt databases are kept 7 days",
        ),
        Rule(
            "one-downgrade-step",
            "Scenario 2 step 3: never downgrade more than 1 step without Sami's explicit approval",
            "at most one migration downgrade without approval",
        ),
        Rule(
            "no-restore-into-production-db",
            "Scenario 5 preflight: never restore into the production DB",
            "the production database is only replaced by the incident restore",
        ),
        Rule(
            "env-edit-only-llm-priority",
            "Scenario 4 step 4: this is the ONLY allowed in-place .env edit",
            "only LLM_PROVIDER_PRIORITY may be edited in .env",
        ),
        Rule(
            "no-delete-active-wal",
            "Scenario 3 step 3: DO NOT delete active WAL",
            "active WAL is never deleted",
        ),
        Rule(
            "keep-armor",
            "Appendix B (do-not-touch), held on the server by the armor (runbook.ops.armor)",
            "the server's armor on protected files and evidence dumps is never lifted",
        ),
    ]
}

_DESTROY = {"rm", "unlink", "shred", "srm"}
_REDIRECT = re.compile(r"^\d*(>>?|>\||&>>?)$")
_EDITORS = {"vi", "vim", "nano", "ed", "emacs", "ex"}
_DROP_DB = re.compile(r"\bdrop\s+database\s+(?:if\s+exists\s+)?\"?([A-Za-z0-9_]+)\"?", re.I)
_RENAME_DB = re.compile(r"\balter\s+database\s+\"?([A-Za-z0-9_]+)\"?\s+rename\b", re.I)
_DATE_IN_NAME = re.compile(r"(\d{8})")
# how a command touches a path (see Guards._written_paths)
WRITE, TREE, BELOW = "write", "tree", "below"


# procedures that lift a rule, each for its own scenario only (check_replace_production_db)
PROCEDURES = frozenset({"restore_incident"})


def check_procedure(procedure: str | None, scenario: str) -> None:
    """Refuse a procedure named by any scenario but its own (raises `ParameterError`).

    >>> check_procedure("restore_incident", "restore_drill")
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: procedure='restore_incident' is only for the 'restore_incident' scenario ...
    """
    if procedure is not None and (procedure not in PROCEDURES or procedure != scenario):
        raise ParameterError(
            f"procedure={procedure!r} is only for the {procedure!r} scenario "
            f"(this is {scenario!r}; known procedures: {', '.join(sorted(PROCEDURES))}): "
            "it lifts the rule that protects the production database",
            key="procedure",
        )


def forbid(rule: str, action: str, why: str = "") -> Forbidden:
    r = RULES[rule]
    return Forbidden(rule, action, source=r.source, why=why)


class Guards:
    """Checks commands and operations against the runbook's rules for one profile."""

    def __init__(
        self,
        profile: Profile,
        *,
        approved_by: str | None = None,
        procedure: str | None = None,
        today: date | None = None,
    ):
        self.profile = profile
        self.approved_by = approved_by
        self.procedure = procedure
        self.today = today
        self.env_edit_allowed = False
        # migration steps downgraded by the commands this run has let through
        self.downgrade_steps = 0
        self._pending_downgrade = 0

    # ------------------------------------------------------------- commands
    def check_command(self, text: str, *, stdin: bytes | str | None = None) -> None:
        """Refuse a command that breaks a rule (raises `Forbidden`).

        `stdin` is what the command will read: a shell reading its script from
        stdin (`bash -s`) has that script checked too, and SQL fed to psql is
        checked for DROP/RENAME DATABASE.
        """
        self._pending_downgrade = 0
        try:
            self._check_text(text, stdin, 0)
        except Forbidden:
            self._pending_downgrade = 0
            raise
        # counted only once the whole command passed: a refused command downgrades nothing
        self.downgrade_steps += self._pending_downgrade
        self._pending_downgrade = 0

    def _check_text(self, text: str, stdin: bytes | str | None, depth: int) -> None:
        lowered = text.lower()
        for m in _DROP_DB.finditer(text):
            self.check_drop_database(m.group(1))
        for m in _RENAME_DB.finditer(text):
            self.check_replace_production_db(m.group(1), f"ALTER DATABASE {m.group(1)} RENAME")
        parsed = parse_commands(text)
        for cmd in parsed:
            self._check_simple(cmd)
        commands = [c.words for c in parsed]
        if "psql" in lowered or "pg_restore" in lowered:
            self._check_restore(commands, text)
        if stdin:
            script = stdin.decode(errors="replace") if isinstance(stdin, bytes) else stdin
            if "psql" in lowered:
                for m in _DROP_DB.finditer(script):
                    self.check_drop_database(m.group(1))
                for m in _RENAME_DB.finditer(script):
                    self.check_replace_production_db(
                        m.group(1), f"ALTER DATABASE {m.group(1)} RENAME"
                    )
            if depth < 2 and any(c.reads_stdin for c in parsed):
                self._check_text(script, None, depth + 1)

    def _check_simple(self, cmd: SimpleCommand) -> None:
        words = cmd.words
        if not words:
            return
        prog = PurePosixPath(words[0]).name
        args = words[1:]
        if prog == "git":
            self._check_git(args)
        elif prog == "alembic" or (prog.startswith("python") and "alembic" in args[:2]):
            self._check_alembic(args[args.index("alembic") + 1 :] if "alembic" in args else args)
        elif prog == "dropdb":
            names = [a for a in args if not a.startswith("-")]
            if names:
                self.check_drop_database(names[-1])
        elif prog == "chattr":
            check_lift_armor(self.profile, args, cmd.cwd)
        action = " ".join(words)
        for path, mode in self._written_paths(prog, args, words, cmd.cwd):
            for one in expand_braces(path):
                self._check_path(one, action, mode, cmd.cwd)

    def _written_paths(
        self, prog: str, args: list[str], words: list[str], cwd: str | None
    ) -> list[tuple[str, str]]:
        """(path, mode) this simple command deletes, moves or overwrites.

        mode: "write" (the path itself is overwritten), "tree" (the path and all
        below it go), "wal" (something below it may go: only the WAL rule applies).
        """
        plain = [a for a in args if not a.startswith("-")]
        paths: list[tuple[str, str]] = []
        if prog in _DESTROY:
            paths += [(p, TREE) for p in plain]
        elif prog in _EDITORS or prog == "truncate" or prog == "tee":
            paths += [(p, WRITE) for p in plain]
        elif prog == "mv" and plain:
            # the sources disappear (whole trees); the destination is overwritten
            paths += [(p, TREE) for p in plain[:-1]] + [(plain[-1], WRITE)]
        elif prog == "rsync" and plain:
            deleting = any(a.startswith(("--delete", "--del")) for a in args)
            paths.append((plain[-1], TREE if deleting else WRITE))
            if "--remove-source-files" in args:
                paths += [(p, TREE) for p in plain[:-1]]
        elif prog in ("cp", "install", "ln") and plain:
            paths.append((plain[-1], WRITE))
        elif prog in ("sed", "perl") and any(
            a == "-i" or a.startswith("-i") or a == "--in-place" for a in args
        ):
            paths += [(p, WRITE) for p in (plain[1:] if prog == "sed" else plain)]
        elif prog == "dd":
            paths += [(a.split("=", 1)[1], WRITE) for a in args if a.startswith("of=")]
        elif prog == "find" and ("-delete" in args or "-exec" in args or "-execdir" in args):
            paths += self._find_paths(args)
        elif prog == "pg_archivecleanup":
            # pg_archivecleanup [-d] [-n] [-x ext] ARCHIVEDIR OLDESTKEPTWALFILE: deletes in ARCHIVEDIR
            rest, i = [], 0
            while i < len(args):
                if args[i] == "-x":
                    i += 2
                    continue
                if not args[i].startswith("-"):
                    rest.append(args[i])
                i += 1
            if rest and "-n" not in args:
                paths.append((rest[0].rstrip("/") + "/*", TREE))
        elif prog == "tar" and "--remove-files" in args:
            paths += [(p, TREE) for p in plain if not p.endswith((".tgz", ".tar", ".gz"))]
        elif prog == "git":
            paths += self._git_clean_paths(args, cwd)
        for i, w in enumerate(words):
            if _REDIRECT.match(w) and i + 1 < len(words):
                paths.append((words[i + 1], WRITE))
            elif re.match(r"^\d*>>?[^>&]", w):
                paths.append((re.sub(r"^\d*>>?", "", w), WRITE))
        return paths

    def _find_paths(self, args: list[str]) -> list[tuple[str, str]]:
        """`find ROOT... [filters] -delete`: the roots, and what the name filters reach."""
        roots: list[str] = []
        for a in args:
            if a.startswith(("-", "(", "!", ")")):
                break
            roots.append(a)
        roots = roots or ["."]
        names = [
            args[i + 1]
            for i, a in enumerate(args[:-1])
            if a in ("-name", "-iname", "-path", "-ipath", "-wholename", "-regex", "-iregex")
        ]
        out: list[tuple[str, str]] = []
        # paths named in the expression (`-path /x/pg_wal/*`) are checked as they are
        out += [(a, WRITE) for a in args[len(roots) :] if "/" in a]
        if not names:
            # no filter: everything under the roots goes
            return out + [(r, TREE) for r in roots]
        for root in roots:
            # with a filter the roots themselves stay; the filter decides what goes.
            # The active WAL is never a target of a bulk delete (filters can't be
            # trusted to spare it), and a do-not-touch file is reached when a name
            # filter matches it.
            out.append((root, BELOW))
            for pat in names:
                out.append((root.rstrip("/") + "/" + PurePosixPath(pat).name, WRITE))
                out.append((pat, WRITE))
        return out

    def _git_clean_paths(self, args: list[str], cwd: str | None) -> list[tuple[str, str]]:
        """`git clean -f` deletes untracked (with -x, ignored) files: a tree delete."""
        i, where = 0, cwd
        while i < len(args) and args[i].startswith("-"):
            if args[i] == "-C" and i + 1 < len(args):
                nxt = args[i + 1]
                where = resolve(nxt, where) if not dynamic(nxt) else None
                i += 2
            elif args[i] == "-c":
                i += 2
            else:
                i += 1
        if i >= len(args) or args[i] != "clean":
            return []
        rest = args[i + 1 :]
        flags = "".join(a[1:] for a in rest if a.startswith("-") and not a.startswith("--"))
        force = "f" in flags or "--force" in rest
        dry = "n" in flags or "--dry-run" in rest
        if not force or dry:
            return []
        specs: list[str] = []
        skip = False
        for a in rest:
            if skip:
                skip = False
                continue
            if a in ("-e", "--exclude"):
                skip = True
                continue
            if not a.startswith("-"):
                specs.append(a)
        base = where or "."
        if not specs:
            return [(base, TREE)]
        return [(posixpath.join(base, s) if not s.startswith("/") else s, TREE) for s in specs]

    def check_write(
        self, path: str, action: str, *, tree: bool = False, cwd: str | None = None
    ) -> None:
        """Refuse deleting, moving or overwriting `path` when a rule protects it.

        `path` may be a shell glob (refused when it could match a protected path);
        `tree=True`: the operation removes a whole tree, so an ancestor of a
        protected path is refused too; `cwd` resolves a relative path.
        """
        self._check_path(path, action, TREE if tree else WRITE, cwd)

    def _check_path(self, path: str, action: str, mode: str, cwd: str | None) -> None:
        full = resolve(path, cwd) or path
        name = PurePosixPath(full).name
        tree = mode == TREE
        if mode != BELOW:
            for protected in self.profile.do_not_touch.files:
                pname = PurePosixPath(protected).name
                if (
                    path == protected
                    or name == pname
                    or fnmatch.fnmatch(full, f"*{pname}*")
                    # a relative glob in an unknown directory: judge it by its name
                    or (
                        not full.startswith("/")
                        and GLOB.search(name) is not None
                        and fnmatch.fnmatchcase(pname, name)
                    )
                    or may_reach(full, protected, tree=tree)
                ):
                    why = f"{protected} is on the do-not-touch list"
                    if tree and full != protected and may_reach(full, protected, tree=True):
                        why += f"; {full} would take it with it"
                    raise forbid("keep-protected-files", action, why)
        if "pg_wal" in full or "pg_xlog" in full:
            raise forbid(
                "no-delete-active-wal",
                action,
                "pg_wal holds active WAL; rotate old backups instead",
            )
        for wal in self._wal_locations():
            if may_reach(full, wal, tree=mode != WRITE):
                raise forbid(
                    "no-delete-active-wal",
                    action,
                    f"{full} holds the active WAL (data directory "
                    f"{self.profile.postgres.data_dir}); rotate old backups instead",
                )
        env_file = self.profile.app.env_file
        if (
            mode != BELOW
            and not self.env_edit_allowed
            and (path == env_file or name == ".env" or may_reach(full, env_file, tree=tree))
        ):
            raise forbid(
                "env-edit-only-llm-priority",
                action,
                "use the library's LLM_PROVIDER_PRIORITY edit (it backs .env up first); "
                "every other change goes through a PR and the deploy",
            )

    def _wal_locations(self) -> list[str]:
        """Where the active WAL can be: pg_wal in the data directory, or in a versioned
        cluster below it (Debian's /var/lib/postgresql/15/main/pg_wal)."""
        d = self.profile.postgres.data_dir.rstrip("/")
        if not d.startswith("/"):
            return []
        return [f"{d}/{w}" for w in ("pg_wal", "pg_xlog", "[0-9]*/*/pg_wal", "[0-9]*/*/pg_xlog")]

    def _check_git(self, args: list[str]) -> None:
        # skip global options: -C dir, -c k=v, --git-dir=...
        i = 0
        while i < len(args) and args[i].startswith("-"):
            i += 2 if args[i] in ("-C", "-c") else 1
        if i >= len(args):
            return
        sub, rest = args[i], args[i + 1 :]
        dnt = self.profile.do_not_touch
        protected = set(dnt.protected_branches)
        kept = set(dnt.no_force_delete_branches)
        action = "git " + " ".join(args[i:])
        if sub == "commit":
            raise forbid(
                "no-commit-on-server",
                action,
                "fixes go through a PR to main, then the deploy notebook",
            )
        if sub == "push":
            refs = [a for a in rest if not a.startswith("-")][1:]
            deleting = any(a in ("-d", "--delete") for a in rest)
            if not refs:
                raise forbid(
                    "no-push-to-main",
                    action,
                    "a push without a refspec may push main; name the branch",
                )
            for raw in refs:
                ref = raw.lstrip("+")
                src, colon, dst = ref.rpartition(":")
                dst_name = dst.removeprefix("refs/heads/")
                if dst_name in protected and not (deleting or (colon and not src)):
                    raise forbid("no-push-to-main", action, f"{dst_name} is protected")
                if (deleting or (colon and not src)) and dst_name in kept | protected:
                    raise forbid("no-force-delete-branch", action, f"{dst_name} is kept")
        if sub == "branch":
            force = any(a in ("-D", "--force", "-f") for a in rest) and any(
                a in ("-d", "-D", "--delete") for a in rest
            )
            deleting = any(a in ("-d", "-D", "--delete") for a in rest)
            names = [a for a in rest if not a.startswith("-")]
            for n in names:
                if n in kept and (force or deleting):
                    raise forbid("no-force-delete-branch", action, f"{n} is kept as evidence")
                if n in protected and deleting:
                    raise forbid("no-push-to-main", action, f"{n} is protected")
        if sub == "update-ref" and "-d" in rest:
            for n in rest:
                if n.removeprefix("refs/heads/") in kept | protected:
                    raise forbid("no-force-delete-branch", action, f"{n} is kept")

    def _check_alembic(self, args: list[str]) -> None:
        if "downgrade" not in args:
            return
        target = (
            args[args.index("downgrade") + 1] if args.index("downgrade") + 1 < len(args) else ""
        )
        m = re.fullmatch(r"-(\d+)", target)
        steps = int(m.group(1)) if m else None
        self.check_downgrade(steps, f"alembic downgrade {target}")
        # counted for the run once the whole command passes (see check_command);
        # an uncounted target (a revision, base) can only pass with an approver
        self._pending_downgrade += steps if steps is not None else 2

    def check_downgrade(self, steps: int | None, action: str) -> None:
        """At most one step per run; more (or an uncounted target) needs `approved_by`.

        Counts what this run already downgraded (`downgrade_steps`): two
        `alembic downgrade -1` in one run are two steps. Checking does not count;
        the command that runs the downgrade is counted by `check_command`.

        >>> from runbook.core.profile import load_profile
        >>> g = Guards(load_profile("production"))
        >>> g.check_command("alembic downgrade -1")
        >>> g.check_downgrade(1, "alembic downgrade -1")
        Traceback (most recent call last):
        ...
        runbook.errors.Forbidden: refused by rule 'one-downgrade-step': ...
        """
        done = self.downgrade_steps + self._pending_downgrade
        if steps is not None and done + steps <= 1:
            return
        if self.approved_by:
            return
        if steps is None:
            what = "a target that is not a counted step"
        elif done:
            what = f"{steps} more step(s) after the {done} this run already downgraded"
        else:
            what = f"{steps} steps"
        raise forbid(
            "one-downgrade-step",
            action,
            f"{what}: pass approved_by=<name of the approver> (recorded in the evidence)",
        )

    # ------------------------------------------------------------- databases
    def check_drop_database(self, name: str) -> None:
        dnt = self.profile.do_not_touch
        if fnmatch.fnmatch(name, dnt.corrupt_db_pattern):
            m = _DATE_IN_NAME.search(name)
            today = self.today or datetime.now(UTC).date()
            if not m:
                raise forbid(
                    "keep-corrupt-db-7-days",
                    f"DROP DATABASE {name}",
                    "its age cannot be read from the name",
                )
            try:
                made = datetime.strptime(m.group(1), "%Y%m%d").date()
            except ValueError:
                raise forbid(
                    "keep-corrupt-db-7-days",
                    f"DROP DATABASE {name}",
                    "its age cannot be read from the name",
                ) from None
            age = (today - made).days
            if age < dnt.corrupt_db_keep_days:
                raise forbid(
                    "keep-corrupt-db-7-days",
                    f"DROP DATABASE {name}",
                    f"it is {age} day(s) old; keep it until day {dnt.corrupt_db_keep_days}",
                )
        self.check_replace_production_db(name, f"DROP DATABASE {name}")

    def check_replace_production_db(self, name: str, action: str) -> None:
        if name == self.profile.postgres.database and self.procedure != "restore_incident":
            raise forbid(
                "no-restore-into-production-db",
                action,
                "only restore_incident.ipynb replaces the production database",
            )

    def _check_restore(self, commands: list[list[str]], text: str) -> None:
        prod = self.profile.postgres.database
        feeds_dump = bool(re.search(r"\b(gunzip|zcat|gzip\s+-d|pg_restore)\b|\.sql(\.gz)?\b", text))
        for words in commands:
            prog = PurePosixPath(words[0]).name if words else ""
            if prog == "pg_restore":
                db = _option(words, "-d", "--dbname")
                if db == prod:
                    self.check_replace_production_db(prod, "pg_restore into " + prod)
            if prog == "psql" and feeds_dump:
                db = _option(words, "-d", "--dbname") or _positional_db(words)
                if db == prod and (
                    ("-c" not in words and "--command" not in words) or "|" in text or "<" in text
                ):
                    self.check_replace_production_db(prod, f"restore a dump into {prod}")


_PROVIDER_LIST = re.compile(r"^[a-z0-9_-]+(,[a-z0-9_-]+)*$")
DEFAULT_PROVIDERS = ("anthropic", "openai", "google")


def check_lift_armor(profile: Profile, args: list[str], cwd: str | None) -> None:
    """Refuse a `chattr` that lifts the immutable attribute from what the armor protects.

    Kept apart from the rest of the guard on purpose: the armor (runbook.ops.armor)
    is the layer that holds when a command is not read at all, and this is the one
    thing the guard adds for it. Protected: the do-not-touch files and the evidence
    dumps under `<backups.dir>/evidence/`; with `-R`, a directory above one of them.

    >>> from runbook.core.profile import load_profile
    >>> check_lift_armor(load_profile("production"), ["-i", "/opt/dealix/.env.pre-v3.0.0.bak"], None)
    Traceback (most recent call last):
    ...
    runbook.errors.Forbidden: refused by rule 'keep-armor': ...
    >>> check_lift_armor(load_profile("production"), ["+i", "/opt/dealix/.env.pre-v3.0.0.bak"], None)
    """
    lifts, recursive, paths = False, False, []
    it = iter(args)
    for a in it:
        if a in ("-v", "-p"):
            next(it, None)  # a version or project number, not a path
        elif a.startswith("-") and set(a[1:]) <= set("RVf") and a != "-":
            recursive = recursive or "R" in a
        elif a[:1] == "-" and "i" in a[1:]:
            lifts = True
        elif a[:1] == "=":
            lifts = lifts or "i" not in a[1:]
        elif a[:1] == "+":
            continue
        else:
            paths.append(a)
    if not lifts:
        return
    armored = [*profile.do_not_touch.files, posixpath.join(profile.backups.dir, "evidence", "*")]
    for path in paths:
        full = resolve(path, cwd) or path
        for protected in armored:
            if not full.startswith("/") or may_reach(full, protected, tree=recursive):
                raise forbid(
                    "keep-armor",
                    "chattr " + " ".join(args),
                    f"{protected} is armored (immutable) on purpose; a root shell outside "
                    "the runbook can lift it, the runbook does not",
                )


def check_provider_priority(value: str, profile: Profile, current: str | None = None) -> None:
    r"""The one allowed .env edit takes a comma-separated list of known provider names only.

    Anything else (a quote, a newline, a space) could write a second line into
    .env. Known: the providers the profile names (llm.status_pages / api_urls),
    the runbook's three, and those in the current value.

    >>> check_provider_priority("openai,google,anthropic", Profile("x", "sandbox"))
    >>> check_provider_priority('openai"\nADMIN_KEY="owned', Profile("x", "sandbox"))
    Traceback (most recent call last):
    ...
    runbook.errors.Forbidden: refused by rule 'env-edit-only-llm-priority': ...
    """
    if not isinstance(value, str) or not _PROVIDER_LIST.fullmatch(value):
        raise forbid(
            "env-edit-only-llm-priority",
            f"set LLM_PROVIDER_PRIORITY to {value!r}",
            "the value must be a comma-separated list of provider names "
            "(e.g. openai,google,anthropic): anything else could write other .env lines",
        )
    known = set(DEFAULT_PROVIDERS) | set(profile.llm.status_pages) | set(profile.llm.api_urls)
    if current and _PROVIDER_LIST.fullmatch(current.strip().strip("'\"")):
        known |= set(current.strip().strip("'\"").split(","))
    unknown = [n for n in value.split(",") if n not in known]
    if unknown:
        raise ParameterError(
            f"LLM_PROVIDER_PRIORITY: unknown provider(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})",
            key="LLM_PROVIDER_PRIORITY",
        )
    if len(set(value.split(","))) != len(value.split(",")):
        raise ParameterError(
            f"LLM_PROVIDER_PRIORITY: {value!r} names a provider twice (reorder, don't repeat)",
            key="LLM_PROVIDER_PRIORITY",
        )


def _option(words: list[str], short: str, long: str) -> str | None:
    for i, w in enumerate(words):
        if w == short and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(long + "="):
            return w.split("=", 1)[1]
        if w.startswith(short) and len(w) > len(short) and not w.startswith("--"):
            return w[len(short) :]
    return None


def _positional_db(words: list[str]) -> str | None:
    takes_value = {"-h", "-p", "-U", "-c", "-f", "-v", "-o", "-P", "-T", "-F", "-R", "-L"}
    skip = False
    positional = []
    for w in words[1:]:
        if skip:
            skip = False
            continue
        if w in takes_value:
            skip = True
            continue
        if w.startswith("-"):
            continue
        positional.append(w)
    return positional[0] if positional else None
