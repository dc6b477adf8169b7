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
| keep-corrupt-db-7-days | dropping a `dealix_corrupt_*` database younger than 7 days, or renaming it away (the incident restore may rename it back to the production name) | Appendix B |
| one-downgrade-step | more than one migration step downgraded in a run without `approved_by` | scenario 2 step 3 |
| no-restore-into-production-db | restoring into, renaming or renaming onto the production database outside the incident restore; dropping it, ever | scenario 5 preflight and step 2 |
| env-edit-only-llm-priority | any in-place edit of `.env` but `LLM_PROVIDER_PRIORITY` (backed up first; a list of provider names only) | scenario 4 step 4 |
| no-delete-active-wal | deleting or moving anything under `pg_wal` / `pg_xlog`, or the data directory or a parent of it | scenario 3 step 3 |
| keep-armor | `chattr -i` (or `=` without `i`) on a do-not-touch file or an evidence dump, or on a directory above one with `-R` | Appendix B; runbook.ops.armor |
| opaque-command | a command that could reach a protected object but that the guard cannot read: an unknown expansion or command substitution in a watched program, eval/source, an interpreter's inline program, a script piped into a shell, xargs feeding a watched program, a git alias, a psql meta-command or -f file it cannot read | README |

How the guard reads a command: docs/safety.md, "Layer 1: the guard".

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
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import PurePosixPath

from pglast.enums import ObjectType

from runbook.core.profile import Profile
from runbook.errors import Forbidden, ParameterError
from runbook.safety.shell import (
    GLOB,
    INTERPRETER,
    SHELLS,
    XARGS_INPUT,
    SimpleCommand,
    dynamic,
    expand_braces,
    may_reach,
    parse_commands,
    resolve,
)
from runbook.safety.sql import (
    SAFE_META,
    conninfo_database,
    is_read_only,
    reaches_outside,
    read_psql_args,
    split_script,
    statements,
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
        Rule(
            "opaque-command",
            "README: the notebooks enforce the runbook's rules in code whatever anyone types",
            "a command the guard cannot read is not run",
        ),
    ]
}

_DESTROY = {"rm", "unlink", "shred", "srm", "rmdir"}
_EDITORS = {
    "vi",
    "vim",
    "nvim",
    "vim.tiny",
    "vim.basic",
    "nano",
    "pico",
    "ed",
    "red",
    "emacs",
    "ex",
    "joe",
    "mcedit",
    "sponge",
    "dos2unix",
    "unix2dos",
    "patch",
    "crudini",
}
_COMPRESSORS = {"gzip", "gunzip", "bzip2", "bunzip2", "xz", "unxz", "lzma", "lz4", "zstd", "pigz"}
_DATE_IN_NAME = re.compile(r"(\d{8})")
# how a command touches a path (see Guards._written_paths)
WRITE, TREE, BELOW = "write", "tree", "below"
# programs a rule watches: an argument the guard cannot read in one of these is refused
# as opaque (see Guards._check_simple); every other program may take unknown arguments
WATCHED = (
    _DESTROY
    | _EDITORS
    | _COMPRESSORS
    | {
        "mv",
        "cp",
        "install",
        "ln",
        "truncate",
        "tee",
        "dd",
        "rsync",
        "sed",
        "perl",
        "awk",
        "gawk",
        "mawk",
        "find",
        "tar",
        "cpio",
        "unzip",
        "pg_archivecleanup",
        "pg_resetwal",
        "pg_resetxlog",
        "pg_dropcluster",
        "git",
        "alembic",
        "psql",
        "pg_restore",
        "dropdb",
        "chattr",
        "sort",
        "split",
        "curl",
        "wget",
    }
)
_GIT_VALUE_OPTS = {
    "-C",
    "-c",
    "--git-dir",
    "--work-tree",
    "--namespace",
    "--exec-path",
    "--config-env",
    "--super-prefix",
    "--list-cmds",
}
# git's own commands; anything else is an alias (in the server's config) or an
# external git-* program, neither of which the guard can read
GIT_COMMANDS = frozenset(
    """add am annotate apply archive bisect blame branch bundle cat-file check-attr
    check-ignore check-mailmap check-ref-format checkout checkout-index cherry cherry-pick
    clean clone commit commit-graph commit-tree config count-objects describe diff diff-files
    diff-index diff-tree difftool fast-export fast-import fetch fetch-pack filter-branch
    for-each-ref format-patch fsck gc get-tar-commit-id grep hash-object help index-pack init
    log ls-files ls-remote ls-tree merge merge-base merge-file merge-tree mktag mktree mv
    name-rev notes pack-refs prune prune-packed pull push range-diff read-tree rebase reflog
    remote repack replace rerere reset restore rev-list rev-parse revert rm shortlog show
    show-branch show-ref sparse-checkout stash status submodule switch symbolic-ref tag
    update-index update-ref var verify-commit verify-pack verify-tag version whatchanged
    worktree write-tree maintenance""".split()
)
# commands that make commits (or rewrite what a branch resolves to) on the server
_GIT_COMMITS = frozenset(
    {
        "commit",
        "commit-tree",
        "cherry-pick",
        "revert",
        "am",
        "rebase",
        "fast-import",
        "filter-branch",
        "replace",
        "merge",
    }
)


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
    """Checks commands and operations against the runbook's rules for one profile.

    `ask`: a read-only question to the server (a shell command, its stdout or None),
    used to resolve what the text cannot tell: the branch HEAD is on, the parent of
    the current migration. `read`: a file on the server (bytes or None), for
    `psql -f FILE` and `\\i FILE`. Without them (a guard with no session) those
    forms are refused as opaque.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        approved_by: str | None = None,
        procedure: str | None = None,
        today: date | None = None,
        ask: Callable[[str], str | None] | None = None,
        read: Callable[[str], bytes | None] | None = None,
    ):
        self.profile = profile
        self.approved_by = approved_by
        self.procedure = procedure
        self.today = today
        self.ask = ask
        self.read = read
        self.env_edit_allowed = False
        # migration steps downgraded by the commands this run has let through
        self.downgrade_steps = 0
        self._pending_downgrade = 0

    # ------------------------------------------------------------- commands
    def check_command(self, text: str, *, stdin: bytes | str | None = None) -> None:
        """Refuse a command that breaks a rule, or that the guard cannot read (raises `Forbidden`).

        `stdin` is what the command will read: a shell reading its script from
        stdin (`bash -s`) has that script checked too, and SQL fed to psql is
        parsed.
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
        script = stdin.decode(errors="replace") if isinstance(stdin, bytes) else (stdin or "")
        cmds = parse_commands(text, stdin=script, read=self.read)
        # a rule a command plainly breaks is named first; what cannot be read comes after
        opaque: Forbidden | None = None
        for cmd in cmds:
            try:
                self._check_simple(cmd, depth)
            except _Opaque as exc:
                opaque = opaque or opaque_command(exc.part, exc.how)
        if opaque is not None:
            raise opaque

    def _check_simple(self, cmd: SimpleCommand, depth: int) -> None:
        if cmd.opaque:
            raise _Opaque(cmd.opaque, _HOW_PLAIN)
        words = cmd.words
        if not words:
            return
        prog = cmd.prog
        args = words[1:]
        action = " ".join(words)
        if prog == "git":
            self._check_git(args, cmd, depth)
        elif prog == "alembic" or (INTERPRETER.match(prog) and args[:2] == ["-m", "alembic"]):
            self._check_alembic(args[2:] if prog != "alembic" else args, cmd)
        elif prog == "dropdb":
            self._check_dropdb(args)
        elif prog == "psql":
            self._check_psql(cmd, depth)
        elif prog == "pg_restore":
            self._check_pg_restore(cmd)
        elif prog == "chattr":
            check_lift_armor(self.profile, args, cmd.cwd)
        elif prog in ("pg_resetwal", "pg_resetxlog", "pg_dropcluster") and "--help" not in args:
            raise forbid(
                "no-delete-active-wal",
                action,
                f"{prog} removes the active WAL (or the whole cluster); rotate old backups instead",
            )
        for path, mode in self._written_paths(prog, args, words, cmd):
            for one in expand_braces(path):
                # `~/x`: an unknown directory, judged by name like a relative path
                if dynamic(one) and not (one.startswith("~") and "$" not in one and "`" not in one):
                    raise _Opaque(
                        f"{action}: writes to {one}, a path the guard cannot read",
                        "name the path plainly",
                    )
                self._check_path(one, action, mode, cmd.cwd)
        # what it cannot read, in a program a rule watches
        reading = prog in _COMPRESSORS and not self._written_paths(prog, args, words, cmd)
        if prog in WATCHED and cmd.unknown and not reading:
            part = cmd.unknown[0]
            how = (
                "xargs (or parallel) feeds it words the guard cannot see: list the paths "
                "plainly, or use the library's operation"
                if part == XARGS_INPUT
                else f"write {part} plainly (its value), or set it in the same command "
                "(X=value; ...) or with env="
            )
            raise _Opaque(f"{action}: {part} in {prog}, which a rule watches", how)
        if cmd.unknown and any(dynamic(w) for w in cmd.writes):
            raise _Opaque(f"{action}: output redirected to {cmd.writes}", "name the file plainly")
        if INTERPRETER.match(prog):
            self._check_interpreter(prog, args, cmd)
        if prog in ("tar", "unzip", "cpio", "bsdtar") and _extracts(prog, args):
            where = _option(words, "-C", "--directory") or (
                _option(words, "-d", "--exdir") if prog == "unzip" else None
            )
            base = resolve(where, cmd.cwd) if where else cmd.cwd
            guarded = [*self.profile.do_not_touch.files, self.profile.app.env_file]
            if base is None or any(may_reach(base, p, tree=True) for p in guarded):
                raise _Opaque(
                    f"{action}: extracts an archive the guard cannot read into "
                    f"{base or 'an unknown directory'}, which holds protected files",
                    "extract into a new directory and copy what you need from there",
                )
        if prog == "sed" and _sed_runs_commands(args):
            raise _Opaque(f"{action}: a sed script that runs shell commands (e)", _HOW_PLAIN)
        if prog in ("awk", "gawk", "mawk") and _awk_program_reaches(args):
            raise _Opaque(
                f"{action}: an awk program that runs commands or writes files",
                "read with awk, then change with a plain command",
            )
        if prog in SHELLS or INTERPRETER.match(prog):
            ran = [a for a in args if not a.startswith("-")][:1]
            for a in ran:
                full = resolve(a, cmd.cwd) or a
                if full in cmd.written_before:
                    raise _Opaque(
                        f"{action}: runs {a}, which this command itself just wrote",
                        "run the commands themselves, not a script written on the fly",
                    )
        if (
            words[0] in cmd.written_before
            or (resolve(words[0], cmd.cwd) or "") in cmd.written_before
        ):
            raise _Opaque(f"{action}: runs a file this command itself just wrote", _HOW_PLAIN)

    def _check_interpreter(self, prog: str, args: list[str], cmd: SimpleCommand) -> None:
        action = " ".join(cmd.words)
        inline = {"-c", "-e", "-E", "-r", "--eval", "-p", "--print"}
        for a in args:
            if a == "--":
                break
            if a in inline or (
                a.startswith("-")
                and not a.startswith("--")
                and any(ch in a[1:] for ch in "ceE")
                and not a.startswith(("-m", "-W", "-X", "-O"))
            ):
                raise _Opaque(
                    f"{action}: {prog} runs an inline program the guard cannot read",
                    "use a plain shell command or the library's operation for the change "
                    "(s.backup_file, s.edit_env_var, s.db.execute, the git and alembic "
                    "operations)",
                )
            if a == "-m":
                return
            if not a.startswith("-"):
                return  # a script on the server, run like any program
        if a_reads_stdin(args):
            raise _Opaque(
                f"{action}: {prog} reads its program from stdin",
                "use a plain shell command or the library's operation",
            )

    def _written_paths(
        self, prog: str, args: list[str], words: list[str], cmd: SimpleCommand
    ) -> list[tuple[str, str]]:
        """(path, mode) this simple command deletes, moves or overwrites.

        mode: "write" (the path itself is overwritten), "tree" (the path and all
        below it go), "below" (something below it may go: only the WAL rule applies).
        """
        plain = [a for a in args if not a.startswith("-")]
        paths: list[tuple[str, str]] = [(w, WRITE) for w in cmd.writes]
        if prog in _DESTROY:
            paths += [(p, TREE) for p in plain]
        elif prog in _EDITORS or prog == "truncate" or prog == "tee":
            paths += [
                (p, WRITE) for p in _plain_after_values(args, "sr" if prog == "truncate" else "")
            ]
        elif prog in ("mv", "cp", "install", "ln") and plain:
            target = _option(words, "-t", "--target-directory")
            if target is not None:
                sources = [p for p in plain if p != target]
                dest = target
            else:
                sources, dest = plain[:-1], plain[-1]
            if prog == "mv":
                # the sources disappear (whole trees)
                paths += [(p, TREE) for p in sources]
            paths.append((dest, WRITE))
            # a destination that is a directory receives each source under its own name
            # (judged only for the directories that hold a protected file)
            parents = {
                posixpath.dirname(p)
                for p in [*self.profile.do_not_touch.files, self.profile.app.env_file]
            }
            full_dest = (resolve(dest, cmd.cwd) or dest).rstrip("/")
            if full_dest in parents or dest.endswith("/"):
                paths += [(full_dest + "/" + PurePosixPath(p).name, WRITE) for p in sources]
        elif prog == "rsync" and plain:
            deleting = any(a.startswith(("--delete", "--del")) for a in args)
            paths.append((plain[-1], TREE if deleting else WRITE))
            if "--remove-source-files" in args:
                paths += [(p, TREE) for p in plain[:-1]]
        elif prog == "sed" and _sed_in_place(args):
            paths += [(p, WRITE) for p in _sed_files(args)]
        elif prog == "perl" and _perl_in_place(args):
            paths += [(p, WRITE) for p in _plain_after_values(args, "eEIMmlx", program=True)]
        elif prog in ("awk", "gawk") and any(
            (
                a in ("-i", "--include")
                and i + 1 < len(args)
                and args[i + 1] in ("inplace", "inplace.awk")
            )
            or a in ("-iinplace",)
            for i, a in enumerate(args)
        ):
            paths += [(p, WRITE) for p in plain[1:]]
        elif prog in _COMPRESSORS and not any(
            a in ("-c", "--stdout", "--to-stdout", "-k", "--keep", "-t", "--test", "-l", "--list")
            or (a.startswith("-") and not a.startswith("--") and any(ch in a for ch in "cktl"))
            for a in args
        ):
            # gzip FILE replaces FILE by FILE.gz: the file itself goes
            paths += [(p, TREE) for p in plain]
        elif prog in ("sort",) and (_option(words, "-o", "--output") is not None):
            paths.append((_option(words, "-o", "--output") or "", WRITE))
        elif prog in ("curl", "wget"):
            out = _option(
                words,
                "-o" if prog == "curl" else "-O",
                "--output" if prog == "curl" else "--output-document",
            )
            if out:
                paths.append((out, WRITE))
        elif prog in ("pg_dump", "pg_dumpall", "pg_basebackup", "pg_restore") and (
            _option(words, "-f", "--file")
            or (_option(words, "-D", "--pgdata") if prog == "pg_basebackup" else None)
        ):
            out = _option(words, "-f", "--file") or _option(words, "-D", "--pgdata") or ""
            if out != "-":
                paths.append((out, WRITE))
        elif prog == "sed" and _sed_writes(args):
            paths += [(p, WRITE) for p in _sed_writes(args)]
        elif prog == "dd":
            paths += [(a.split("=", 1)[1], WRITE) for a in args if a.startswith("of=")]
        elif prog == "find" and any(
            a in ("-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprintf", "-fls")
            for a in args
        ):
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
            paths += self._git_clean_paths(args, cmd.cwd)
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
        specs = _operands(rest, {"-e", "--exclude"})
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
                    # a bare name in an unknown directory (a copy beside it, `name.bak`,
                    # is another file: the real parser leaves no quotes inside words)
                    or name == pname
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

    # ------------------------------------------------------------------ git
    def _check_git(self, args: list[str], cmd: SimpleCommand, depth: int) -> None:
        """git judged by what it will do: aliases expanded, plumbing and refspecs read."""
        i, where, aliases = 0, cmd.cwd, {}
        globals_: list[str] = []
        while i < len(args) and args[i].startswith("-"):
            a = args[i]
            if a in _GIT_VALUE_OPTS and i + 1 < len(args):
                val = args[i + 1]
                if a == "-C":
                    where = resolve(val, where)
                elif a == "-c":
                    key, _, value = val.partition("=")
                    if key.lower().startswith("alias."):
                        aliases[key[6:].lower()] = value
                globals_ += [a, val]
                i += 2
                continue
            if a.startswith("--config-env") or a.startswith("--exec-path="):
                raise _Opaque(f"git {a}: git configuration the guard cannot read", _HOW_GIT)
            globals_.append(a)
            i += 1
        if i >= len(args):
            return
        sub, rest = args[i], args[i + 1 :]
        action = "git " + " ".join(args[i:])
        if sub.lower() in aliases:
            value = aliases[sub.lower()]
            if value.startswith("!"):
                self._check_text(value[1:] + " " + shlex.join(rest), None, depth + 1)
                return
            try:
                expanded = shlex.split(value)
            except ValueError:
                raise _Opaque(f"git alias {sub}={value!r}", _HOW_GIT) from None
            if expanded and expanded[0].lower() in aliases:
                raise _Opaque(f"git alias {sub} names another alias", _HOW_GIT)
            self._check_git([*globals_, *expanded, *rest], cmd, depth)
            return
        if sub not in GIT_COMMANDS:
            raise _Opaque(
                f"{action}: '{sub}' is not a git command the guard knows (an alias in the "
                "server's git config, or an external git-* program, runs whatever it names)",
                _HOW_GIT,
            )
        dnt = self.profile.do_not_touch
        protected = set(dnt.protected_branches)
        kept = set(dnt.no_force_delete_branches)
        if sub in _GIT_COMMITS:
            if sub == "merge" and any(a in ("--ff-only", "--abort", "--quit") for a in rest):
                return
            if sub == "rebase" and any(a in ("--abort", "--quit") for a in rest):
                return
            raise forbid(
                "no-commit-on-server",
                action,
                "fixes go through a PR to main, then the deploy notebook"
                + (" (git merge makes a commit unless --ff-only)" if sub == "merge" else ""),
            )
        if sub == "pull" and not any(a in ("--ff-only", "--dry-run") for a in rest):
            raise forbid(
                "no-commit-on-server",
                action,
                "a pull without --ff-only may make a merge commit on the server; "
                "use git pull --ff-only (the library's s.git.pull_ff_only)",
            )
        if sub == "push":
            self._check_push(rest, action, where, protected, kept)
        elif sub == "branch":
            self._check_branch(rest, action, where, protected, kept)
        elif sub == "reset" and not any(a in ("--soft",) for a in rest) and kept:
            # a reset moves the branch HEAD is on: never the kept one
            branch = self._current_branch(where) if self.ask is not None else None
            if branch in kept:
                raise forbid(
                    "no-force-delete-branch", action, f"HEAD is on {branch}, which is kept"
                )
        if sub in ("checkout", "switch", "worktree"):
            for j, a in enumerate(rest):
                if (
                    a in ("-B", "-C", "--force-create")
                    and j + 1 < len(rest)
                    and rest[j + 1] in kept
                ):
                    raise forbid(
                        "no-force-delete-branch", action, f"{rest[j + 1]} is kept; {a} resets it"
                    )
        elif sub == "update-ref":
            self._check_update_ref(rest, action, cmd, protected, kept)
        elif sub == "symbolic-ref":
            names = [a for a in rest if not a.startswith("-")]
            deleting = any(a in ("-d", "--delete") for a in rest)
            if (len(names) >= 2 or deleting) and names:
                ref = _branch_name(names[0])
                if ref in kept | protected:
                    raise forbid(
                        "no-force-delete-branch", action, f"{ref} is kept; symbolic-ref moves it"
                    )
        elif sub == "fetch":
            for spec in [a for a in rest if not a.startswith("-")][1:]:
                _src, colon, dst = spec.lstrip("+").rpartition(":")
                if colon and _branch_name(dst) in kept | protected:
                    raise forbid(
                        "no-force-delete-branch", action, f"{dst} is kept; fetch would overwrite it"
                    )

    def _current_branch(self, where: str | None) -> str | None:
        """The branch HEAD is on, asked of the server (None when it cannot be known)."""
        if self.ask is None:
            return None
        loc = f"-C {shlex.quote(where)} " if where else f"-C {shlex.quote(self.profile.app.dir)} "
        out = self.ask(f"git {loc}symbolic-ref --short -q HEAD")
        return out.strip() if out is not None and out.strip() else None

    def _check_push(
        self, rest: list[str], action: str, where: str | None, protected: set[str], kept: set[str]
    ) -> None:
        if any(a in ("-n", "--dry-run") for a in rest):
            return  # changes nothing on the origin
        plain = _operands(rest, {"-o", "--push-option", "--repo", "--receive-pack", "--exec"})
        deleting = any(a in ("-d", "--delete") for a in rest)
        if any(a in ("--mirror", "--all", "--branches") for a in rest):
            raise forbid("no-push-to-main", action, "--mirror/--all push (or delete) main too")
        if any(a == "--prune" for a in rest):
            raise forbid(
                "no-force-delete-branch", action, "--prune deletes remote branches, kept ones too"
            )
        refs = plain[1:]
        if not refs:
            raise forbid(
                "no-push-to-main",
                action,
                "a push without a refspec pushes what the config says (main too); name the branch",
            )
        for raw in refs:
            ref = raw.lstrip("+")
            src, colon, dst = ref.rpartition(":")
            if not colon:
                src = dst
            names = {_branch_name(dst)}
            if dst in ("HEAD", "@") or (not colon and src in ("HEAD", "@")):
                branch = self._current_branch(where)
                if branch is None:
                    raise forbid(
                        "no-push-to-main",
                        action,
                        f"{raw} pushes the branch HEAD is on, which the guard cannot tell here; "
                        "name the branch (git push origin <branch>)",
                    )
                names = {branch}
            if GLOB.search(dst):
                names = {b for b in protected | kept if fnmatch.fnmatchcase(b, _branch_name(dst))}
                names |= {
                    b for b in protected | kept if fnmatch.fnmatchcase("refs/heads/" + b, dst)
                }
            removing = deleting or (colon and not src)
            for name in names:
                if name in protected and not removing:
                    raise forbid("no-push-to-main", action, f"{name} is protected")
                if removing and name in kept | protected:
                    raise forbid("no-force-delete-branch", action, f"{name} is kept")

    def _check_branch(
        self, rest: list[str], action: str, where: str | None, protected: set[str], kept: set[str]
    ) -> None:
        flags = {a for a in rest if a.startswith("-")}
        letters = "".join(a[1:] for a in flags if not a.startswith("--"))
        names = [a for a in rest if not a.startswith("-")]
        deleting = "d" in letters or "D" in letters or "--delete" in flags
        moving = "m" in letters or "M" in letters or "--move" in flags
        force = "f" in letters or "--force" in flags
        if deleting:
            for n in names:
                if n in kept:
                    raise forbid("no-force-delete-branch", action, f"{n} is kept as evidence")
                if n in protected:
                    raise forbid("no-push-to-main", action, f"{n} is protected")
        if moving:
            old = names[0] if len(names) >= 2 else self._current_branch(where)
            if old is None:
                raise forbid(
                    "no-force-delete-branch",
                    action,
                    "it renames the branch HEAD is on, which the guard cannot tell; name both branches",
                )
            if old in kept | protected or (len(names) >= 2 and names[1] in kept | protected):
                raise forbid(
                    "no-force-delete-branch", action, f"{old} is kept; renaming moves it away"
                )
        copying = "c" in letters or "C" in letters or "--copy" in flags
        if copying and len(names) >= 2 and names[1] in kept | protected:
            raise forbid(
                "no-force-delete-branch", action, f"{names[1]} is kept; a copy onto it replaces it"
            )
        if force and not deleting and not moving and names and names[0] in kept | protected:
            raise forbid("no-force-delete-branch", action, f"{names[0]} is kept; -f resets it")

    def _check_update_ref(
        self, rest: list[str], action: str, cmd: SimpleCommand, protected: set[str], kept: set[str]
    ) -> None:
        lines: list[list[str]] = []
        if "--stdin" in rest:
            if cmd.stdin is None:
                raise _Opaque(
                    f"{action}: reads its ref updates from a stream the guard cannot see", _HOW_GIT
                )
            lines = [ln.split() for ln in cmd.stdin.splitlines() if ln.strip()]
        else:
            names = [a for a in rest if not a.startswith("-")]
            verb = "delete" if any(a in ("-d", "--delete") for a in rest) else "update"
            if names:
                lines = [[verb, *names]]
        for parts in lines:
            if len(parts) < 2:
                continue
            verb, ref = parts[0], _branch_name(parts[1])
            if ref in ("HEAD", "@") and "--no-deref" not in rest:
                branch = self._current_branch(cmd.cwd)
                if branch is None:
                    raise forbid(
                        "no-commit-on-server",
                        action,
                        "update-ref HEAD moves the branch HEAD is on, which the guard cannot "
                        "tell; name the branch",
                    )
                ref = branch
            if ref in kept or (verb == "delete" and ref in protected):
                raise forbid(
                    "no-force-delete-branch", action, f"{ref} is kept; update-ref {verb}s it"
                )
            if ref in protected:
                raise forbid(
                    "no-commit-on-server",
                    action,
                    f"update-ref moves {ref} on the server; changes go through a PR",
                )

    # ------------------------------------------------------------- alembic
    def _check_alembic(self, args: list[str], cmd: SimpleCommand) -> None:
        if "downgrade" not in args:
            return
        k = args.index("downgrade")
        rest = [a for a in args[k + 1 :] if not a.startswith("-") or re.fullmatch(r"-\d+", a)]
        if "--sql" in args[k + 1 :]:
            return  # offline mode: prints SQL, changes nothing
        target = rest[0] if rest else ""
        action = f"alembic downgrade {target}"
        m = re.fullmatch(r"-(\d+)", target)
        steps = int(m.group(1)) if m else None
        if steps is None and target and target not in ("base",) and not GLOB.search(target):
            steps = self._steps_to_revision(target, args[:k], cmd)
        if cmd.in_loop:
            self.check_downgrade(None, action + " (in a loop: runs an unknown number of times)")
        self.check_downgrade(steps, action)
        # counted for the run once the whole command passes (see check_command);
        # an uncounted target (base, an unknown revision) can only pass with an approver
        self._pending_downgrade += steps if steps is not None else 2

    def _steps_to_revision(self, target: str, options: list[str], cmd: SimpleCommand) -> int | None:
        """1 when `target` is the current revision's parent (asked of the server), else None."""
        if self.ask is None or not re.fullmatch(r"[0-9A-Za-z_]+", target):
            return None
        prog = shlex.quote(cmd.words[0]) if cmd.prog == "alembic" else shlex.join(cmd.words[:3])
        where = (
            f"cd {shlex.quote(cmd.cwd)} && "
            if cmd.cwd
            else f"cd {shlex.quote(self.profile.app.dir)} && "
        )
        base = f"{where}{prog} {shlex.join(options)}".rstrip()
        current = None
        for line in (self.ask(f"{base} current") or "").splitlines():
            m = re.match(r"^([0-9A-Za-z_]+)(?: \(.*\))?\s*$", line.strip())
            if m and not line.startswith("INFO"):
                current = m.group(1)
                break
        if current is None:
            return None
        out = self.ask(f"{base} show {shlex.quote(current)}") or ""
        m = re.search(r"^Parent:\s*(\S+)", out, re.M)
        parent = m.group(1) if m else ""
        if parent and parent != "<base>" and len(target) >= 4 and parent.startswith(target):
            return 1
        return None

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
    def _check_dropdb(self, args: list[str]) -> None:
        names = _operands(
            args, {"-h", "-p", "-U", "--host", "--port", "--username", "--maintenance-db"}
        )
        for n in names[:1]:
            self.check_drop_database(n)

    def _check_psql(self, cmd: SimpleCommand, depth: int) -> None:
        env = dict(cmd.env)
        inv = read_psql_args(cmd.words[1:], env)
        action = " ".join(cmd.words)
        db = inv.database if inv.database_known else None
        for out in (_option(cmd.words, "-o", "--output"), _option(cmd.words, "-L", "--log-file")):
            if out and not out.startswith("|"):
                self._check_path(out, action, WRITE, cmd.cwd)
            elif out:
                self._check_text(out[1:], None, depth + 1)
        for text in inv.commands:
            # -c runs one command: SQL, or a single backslash meta-command
            self._check_sql(text, db, cmd, depth, script=False, action=action)
        for f in inv.files:
            if f == "-":
                continue
            self._check_sql(
                self._read_script(f, cmd.cwd, action),
                db,
                cmd,
                depth,
                script=True,
                action=action,
                origin=f,
            )
        if inv.reads_stdin:
            if cmd.stdin is not None:
                if cmd.stdin.strip():
                    self._check_sql(cmd.stdin, db, cmd, depth, script=True, action=action)
            elif (
                cmd.stdin_from_file
                and self.read is not None
                and (resolve(cmd.stdin_from_file, cmd.cwd) or "") not in cmd.written_before
            ):
                self._check_sql(
                    self._read_script(cmd.stdin_from_file, cmd.cwd, action),
                    db,
                    cmd,
                    depth,
                    script=True,
                    action=action,
                    origin=cmd.stdin_from_file,
                )
            else:
                # a stream the guard cannot read (a dump through gunzip, a pipe): a restore
                self._restore_into(
                    db,
                    action,
                    "it feeds psql a script the guard cannot read (a dump?)",
                    known=inv.database_known,
                )

    def _read_script(self, path: str, cwd: str | None, action: str) -> str:
        full = resolve(path, cwd)
        if full is None:
            raise _Opaque(
                f"{action}: the file {path} is in a directory the guard does not know",
                "give psql the file's full path",
            )
        data = self.read(full) if self.read is not None else None
        if data is None:
            raise _Opaque(
                f"{action}: the guard could not read {full} on the server to see what it runs",
                "make the file readable, or run its statements with s.db.execute",
            )
        return data.decode(errors="replace")

    def _restore_into(self, db: str | None, action: str, why: str, *, known: bool) -> None:
        prod = self.profile.postgres.database
        if self.procedure == "restore_incident":
            return
        if known and db != prod:
            return
        if not known:
            why += "; the database it connects to is not named (a restore may hit " + prod + ")"
        raise forbid("no-restore-into-production-db", action, why)

    def _check_sql(
        self,
        text: str,
        db: str | None,
        cmd: SimpleCommand,
        depth: int,
        *,
        script: bool,
        action: str,
        origin: str | None = None,
    ) -> None:
        if depth > 4:
            raise _Opaque(f"{action}: SQL scripts nested more than 4 deep", _HOW_SQL)
        known = db is not None
        chunks, metas = split_script(text)
        unknown_meta: _Opaque | None = None
        for name, arg in metas:
            if name == "!" or (
                (name in ("o", "out", "g", "gx", "w", "write")) and arg.startswith("|")
            ):
                shell = arg[1:] if name != "!" else arg
                self._check_text(shell, None, depth + 1)
                continue
            if name in ("o", "out", "g", "gx", "w", "write") and arg:
                self._check_path(shlex.split(arg)[0], f"{action}: \\{name} {arg}", WRITE, cmd.cwd)
                continue
            if name in ("i", "ir", "include", "include_relative"):
                base = (
                    posixpath.dirname(origin)
                    if (origin and name in ("ir", "include_relative"))
                    else cmd.cwd
                )
                path = shlex.split(arg)[0] if arg else ""
                inner = self._read_script(path, base, f"{action}: \\{name} {path}")
                self._check_sql(inner, db, cmd, depth + 1, script=True, action=action, origin=path)
                continue
            if name in ("c", "connect"):
                target = shlex.split(arg)[0] if arg else ""
                db, known_now = (
                    conninfo_database(target) if target and target != "-" else (db, known)
                )
                known = known_now
                continue
            if name == "copy":
                low = arg.lower()
                m = re.search(r"\bto\s+('([^']*)'|(\S+))", arg, re.I)
                if " program " in f" {low} ":
                    raise _Opaque(f"{action}: \\copy ... program runs a shell command", _HOW_SQL)
                if m and not (m.group(3) or "").lower().startswith(("stdout", "pstdout")):
                    self._check_path(
                        m.group(2) or m.group(3), f"{action}: \\copy {arg}", WRITE, cmd.cwd
                    )
                elif re.search(r"\bfrom\b", low) and script:
                    self._restore_into(
                        db, action, "\\copy ... from loads data into it", known=known
                    )
                continue
            if not SAFE_META.match(name) or name in ("gexec", "e", "edit", "ef", "ev"):
                # raised after the statements are judged: a restore is named as one
                unknown_meta = unknown_meta or _Opaque(
                    f"{action}: psql's \\{name} runs what the guard cannot read",
                    "write the SQL itself (s.db.execute / s.db.query)",
                )
        writes_db = False
        unparsed: _Opaque | None = None
        for chunk in chunks:
            try:
                stmts = statements(chunk)
            except Exception as exc:  # PartialParse, pglast.parser.ParseError
                unparsed = unparsed or _Opaque(
                    f"{action}: PostgreSQL's parser does not read {chunk.strip()[:80]!r} ({exc})",
                    "write plain SQL (psql variables such as :name are not resolved by the guard)",
                )
                stmts = getattr(exc, "parsed", [])
            for st in stmts:
                kind = type(st).__name__
                if kind == "DropdbStmt":
                    self.check_drop_database(st.dbname)
                elif kind == "RenameStmt" and st.renameType == ObjectType.OBJECT_DATABASE:
                    self.check_rename_database(st.subname, st.newname)
                elif kind in ("UpdateStmt", "DeleteStmt", "InsertStmt") and (
                    getattr(st.relation, "relname", "") or ""
                ).startswith("pg_"):
                    raise _Opaque(
                        f"{action}: writes the system catalog ({st.relation.relname})",
                        "use DROP/ALTER DATABASE, which the guard reads",
                    )
                elif kind == "AlterDatabaseStmt" and st.dbname == self.profile.postgres.database:
                    pass
                reach = reaches_outside(st, chunk)
                if reach:
                    raise _Opaque(f"{action}: {reach}", _HOW_SQL)
                if kind == "CopyStmt" and st.filename and not st.is_from:
                    self._check_path(st.filename, f"{action}: COPY TO {st.filename}", WRITE, None)
                if not is_read_only(st):
                    writes_db = True
        if script and writes_db:
            self._restore_into(
                db,
                action,
                f"the script{' ' + origin if origin else ''} writes into the database "
                "(CREATE, COPY, INSERT ...): a restore",
                known=known,
            )
        if unknown_meta is not None:
            raise unknown_meta
        if unparsed is not None:
            raise unparsed

    def _check_pg_restore(self, cmd: SimpleCommand) -> None:
        words = cmd.words
        db = _option(words, "-d", "--dbname")
        action = " ".join(words)
        creating = any(a in ("-C", "--create") for a in words[1:]) or any(
            a.startswith("-") and not a.startswith("--") and "C" in a for a in words[1:]
        )
        if db is None:
            return  # writes SQL to stdout or a file (-f): changes no database
        if creating:
            # the database named inside the dump is (re)created: -d only names where to connect
            self._restore_into(
                None, action, "--create restores into the database the dump names", known=False
            )
            return
        name, known = conninfo_database(db)
        self._restore_into(name, action, f"pg_restore into {name}", known=known)

    # ------------------------------------------------------------- databases
    def check_drop_database(self, name: str, verb: str = "DROP DATABASE") -> None:
        """Refuse dropping (or renaming away, `verb`) a young corrupt or the production database."""
        dnt = self.profile.do_not_touch
        if verb == "DROP DATABASE" and name == self.profile.postgres.database:
            # even the incident restore, which replaces production, renames it (evidence)
            raise forbid(
                "no-restore-into-production-db",
                f"{verb} {name}",
                "the production database is never dropped: scenario 5 renames it to "
                f"{dnt.corrupt_db_pattern} (do NOT drop: evidence)",
            )
        if fnmatch.fnmatch(name, dnt.corrupt_db_pattern):
            m = _DATE_IN_NAME.search(name)
            today = self.today or datetime.now(UTC).date()
            if not m:
                raise forbid(
                    "keep-corrupt-db-7-days",
                    f"{verb} {name}",
                    "its age cannot be read from the name",
                )
            try:
                made = datetime.strptime(m.group(1), "%Y%m%d").date()
            except ValueError:
                raise forbid(
                    "keep-corrupt-db-7-days",
                    f"{verb} {name}",
                    "its age cannot be read from the name",
                ) from None
            age = (today - made).days
            if age < dnt.corrupt_db_keep_days:
                raise forbid(
                    "keep-corrupt-db-7-days",
                    f"{verb} {name}",
                    f"it is {age} day(s) old; keep it until day {dnt.corrupt_db_keep_days}",
                )
        self.check_replace_production_db(name, f"{verb} {name}")

    def check_rename_database(self, name: str, new: str) -> None:
        """Refuse renaming a young corrupt or the production database away, or onto production.

        One rename is the way back, not away: in the incident restore, a damaged
        database renamed back to the production name (the swap's undo when the
        clone cannot take the name) keeps every byte and leaves the server with its
        database; refusing it would strand production without one.

        >>> from runbook.core.profile import load_profile
        >>> g = Guards(load_profile("production"), procedure="restore_incident")
        >>> g.check_rename_database("dealix_corrupt_20990101", "dealix")  # the swap back
        >>> g.check_rename_database("dealix_corrupt_20990101", "elsewhere")
        Traceback (most recent call last):
        runbook.errors.Forbidden: refused by rule 'keep-corrupt-db-7-days': ...
        """
        action = f"ALTER DATABASE {name} RENAME TO {new}"
        prod = self.profile.postgres.database
        self.check_replace_production_db(new, action)
        swap_back = (
            self.procedure == "restore_incident"
            and new == prod
            and fnmatch.fnmatch(name, self.profile.do_not_touch.corrupt_db_pattern)
        )
        if not swap_back:
            # renaming a young corrupt database away is the first half of dropping it
            self.check_drop_database(name, "ALTER DATABASE ... RENAME")

    def check_replace_production_db(self, name: str, action: str) -> None:
        if name == self.profile.postgres.database and self.procedure != "restore_incident":
            raise forbid(
                "no-restore-into-production-db",
                action,
                "only restore_incident.ipynb replaces the production database",
            )


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


# ------------------------------------------------------------------ opaque commands
_HOW_PLAIN = (
    "write the command plainly (literal paths and names, no eval/source, no script piped "
    "into a shell), or use the library's operation for the change"
)
_HOW_GIT = "write the git command itself (git <command> ...), not an alias or a config override"
_HOW_SQL = "write the SQL itself with s.db.execute / s.db.query"


class _Opaque(Exception):
    """Raised inside the guard for a part it cannot read; becomes an `opaque-command` refusal."""

    def __init__(self, part: str, how: str):
        super().__init__(part)
        self.part = part
        self.how = how


def opaque_command(part: str, how: str) -> Forbidden:
    return forbid("opaque-command", part, f"the guard cannot read this part; {how}")


def _branch_name(ref: str) -> str:
    """`refs/heads/main`, `heads/main` and `main` are the same branch."""
    return ref.removeprefix("refs/").removeprefix("heads/")


def _operands(args: list[str], value_opts: set[str]) -> list[str]:
    """The words that are not options, skipping the value after each option in `value_opts`.

    >>> _operands(["-h", "db1", "--force", "dealix"], {"-h"})
    ['dealix']
    """
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in value_opts:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def _plain_after_values(args: list[str], value_letters: str, *, program: bool = False) -> list[str]:
    """The non-option words, skipping the values of short options in `value_letters`."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("--"):
            continue
        if a.startswith("-") and len(a) > 1:
            letters = a[1:]
            for j, ch in enumerate(letters):
                if ch in value_letters:
                    if j == len(letters) - 1:
                        skip = True
                    break
            continue
        out.append(a)
    return out


def _sed_in_place(args: list[str]) -> bool:
    """sed -i, -ri, -i.bak, -Ei, --in-place, --in-place=SUFFIX (any cluster holding i).

    >>> _sed_in_place(["-ri", "s/a/b/", ".env"]), _sed_in_place(["-n", "p"])
    (True, False)
    """
    for a in args:
        if a == "--in-place" or a.startswith("--in-place="):
            return True
        if a.startswith("-") and not a.startswith("--"):
            letters = a[1:]
            for ch in letters:
                if ch == "i":
                    return True
                if ch in "efl":  # takes a value: the rest is that value
                    break
    return False


def _sed_files(args: list[str]) -> list[str]:
    """sed's file operands: every plain word but the script (unless -e/-f gave it)."""
    plain: list[str] = []
    scripted = False
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("--"):
            if a in ("--expression", "--file"):
                scripted, skip = True, True
            elif a.startswith(("--expression=", "--file=")):
                scripted = True
            continue
        if a.startswith("-") and len(a) > 1:
            for j, ch in enumerate(a[1:]):
                if ch in "ef":
                    scripted = True
                    skip = j == len(a) - 2
                    break
                if ch == "l":
                    skip = j == len(a) - 2
                    break
            continue
        plain.append(a)
    return plain if scripted else plain[1:]


def _extracts(prog: str, args: list[str]) -> bool:
    """tar -x / --extract / --get, unzip (always), cpio -i."""
    if prog == "unzip":
        return not any(a in ("-l", "-t", "-v", "-Z", "-p", "-c") for a in args)
    if prog == "cpio":
        return any(a.startswith("-") and not a.startswith("--") and "i" in a for a in args) or (
            "--extract" in args
        )
    first = args[0] if args else ""
    return (
        any(a in ("--extract", "--get") for a in args)
        or any(a.startswith("-") and not a.startswith("--") and "x" in a for a in args)
        or (not first.startswith("-") and "x" in first)
    )


def _sed_scripts(args: list[str]) -> list[str]:
    scripts: list[str] = []
    for i, a in enumerate(args):
        if a in ("-e", "--expression") and i + 1 < len(args):
            scripts.append(args[i + 1])
        elif a.startswith("--expression="):
            scripts.append(a.split("=", 1)[1])
    if not scripts:
        plain = [a for a in args if not a.startswith("-")]
        scripts = plain[:1]
    return scripts


def _sed_writes(args: list[str]) -> list[str]:
    """Files a sed script writes with its `w`/`W` command or the `s///w` flag.

    >>> _sed_writes(["-n", "s/a/b/w /opt/dealix/.env", "x"]), _sed_writes(["s/a/b/g", "x"])
    (['/opt/dealix/.env'], [])
    """
    found: list[str] = []
    for script in _sed_scripts(args):
        found += re.findall(r"(?:^|[;\n{}]|/[gpiImMeE0-9]*)\s*[wW]\s+([^;\n}]+)", script)
    return [f.strip() for f in found if f.strip()]


def _sed_runs_commands(args: list[str]) -> bool:
    """A sed script with the `e` command or the `s///e` flag runs shell commands."""
    return any(
        re.search(r"(?:^|[;\n{}])\s*e(\s|$)|s(.).*?\2.*?\2[gpiImM0-9]*e", script)
        for script in _sed_scripts(args)
    )


def _perl_in_place(args: list[str]) -> bool:
    for a in args:
        if a.startswith("-") and not a.startswith("--"):
            for ch in a[1:]:
                if ch == "i":
                    return True
                if ch in "eEIMmlx":
                    break
    return False


def _awk_program_reaches(args: list[str]) -> bool:
    """An awk program that runs commands (system, a pipe) or writes a file (print > f)."""
    program = next((a for a in args if not a.startswith("-")), "")
    return bool(re.search(r"system\s*\(|\|\s*(getline|&)|\|\s*\"|printf?\b[^;}]*>", program))


def a_reads_stdin(args: list[str]) -> bool:
    """An interpreter with no script (or `-`) reads its program from stdin."""
    if "-" in args:
        return True
    info = {"-V", "--version", "-h", "--help", "-v"}
    plain = [a for a in args if not a.startswith("-")]
    return not plain and not (set(args) & info)
