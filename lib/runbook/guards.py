"""The runbook's rules, enforced in code: each a named guard that refuses with `Forbidden`.

Guards see every command the session sends (the library's own operations
and raw shell strings alike) before it runs, in dry-run too, so a plan
that would break a rule is refused before anything changes.

| rule | refuses | runbook |
|---|---|---|
| no-push-to-main | `git push` to a protected branch (or without a refspec) | Appendix B; scenario 2 step 5 |
| no-commit-on-server | `git commit` on the target: changes flow through a PR | section 0, "First rule"; scenario 2 step 5 |
| keep-protected-files | deleting, moving, truncating or overwriting a do-not-touch file | Appendix B |
| no-force-delete-branch | `git branch -D`, `push --delete`, `update-ref -d` of a kept branch | Appendix B |
| keep-corrupt-db-7-days | dropping a `dealix_corrupt_*` database younger than 7 days | Appendix B |
| one-downgrade-step | `alembic downgrade` of more than one step without `approved_by` | scenario 2 step 3 |
| no-restore-into-production-db | restoring into, dropping or renaming the production database outside the incident restore | scenario 5 preflight |
| env-edit-only-llm-priority | any in-place edit of `.env` but `LLM_PROVIDER_PRIORITY` (backed up first) | scenario 4 step 4 |
| no-delete-active-wal | deleting or moving anything under `pg_wal` / `pg_xlog` | scenario 3 step 3 |

Example::

    >>> from runbook.profile import load_profile
    >>> g = Guards(load_profile("production"))
    >>> g.check_command("git push origin main")
    Traceback (most recent call last):
    ...
    runbook.errors.Forbidden: refused by rule 'no-push-to-main': ...
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import PurePosixPath

from runbook.errors import Forbidden
from runbook.profile import Profile


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
    ]
}

_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "\n", "|&"}
_DESTROY = {"rm", "unlink", "shred", "truncate", "srm"}
_REDIRECT = re.compile(r"^\d*(>>?|>\|)$")
_EDITORS = {"vi", "vim", "nano", "ed", "emacs", "ex"}
_DROP_DB = re.compile(r"\bdrop\s+database\s+(?:if\s+exists\s+)?\"?([A-Za-z0-9_]+)\"?", re.I)
_RENAME_DB = re.compile(r"\balter\s+database\s+\"?([A-Za-z0-9_]+)\"?\s+rename\b", re.I)
_DATE_IN_NAME = re.compile(r"(\d{8})")


def forbid(rule: str, action: str, why: str = "") -> Forbidden:
    r = RULES[rule]
    return Forbidden(rule, action, source=r.source, why=why)


def split_commands(text: str) -> list[list[str]]:
    """Split a shell string into simple commands (word lists), best effort.

    >>> split_commands("cd /x && rm -f a; echo 'b; c' | tee out")
    [['cd', '/x'], ['rm', '-f', 'a'], ['echo', 'b; c'], ['tee', 'out']]
    """
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        # unbalanced quotes: fall back to whitespace words, still inspected
        tokens = text.split()
    commands: list[list[str]] = [[]]
    for tok in tokens:
        if tok in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(tok)
    return [_unwrap(c) for c in commands if c]


def _unwrap(words: list[str]) -> list[str]:
    """Skip wrappers (sudo, env, runuser, timeout, nice) to the real command."""
    i = 0
    while i < len(words):
        w = PurePosixPath(words[i]).name
        if w in ("sudo", "runuser", "nice", "nohup", "exec", "command", "timeout", "env", "stdbuf"):
            i += 1
            while i < len(words) and (
                words[i].startswith("-")
                or "=" in words[i]
                or (w == "timeout" and re.fullmatch(r"[\d.]+[smhd]?", words[i]))
            ):
                if words[i] in ("-u", "-g", "-k", "-s") and i + 1 < len(words):
                    i += 1
                i += 1
            continue
        break
    return words[i:]


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

    # ------------------------------------------------------------- commands
    def check_command(self, text: str) -> None:
        """Refuse a command that breaks a rule (raises `Forbidden`)."""
        lowered = text.lower()
        for m in _DROP_DB.finditer(text):
            self.check_drop_database(m.group(1))
        for m in _RENAME_DB.finditer(text):
            self.check_replace_production_db(m.group(1), f"ALTER DATABASE {m.group(1)} RENAME")
        commands = split_commands(text)
        for words in commands:
            self._check_simple(words, text)
        if "psql" in lowered or "pg_restore" in lowered:
            self._check_restore(commands, text)

    def _check_simple(self, words: list[str], text: str) -> None:
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
        targets = self._written_paths(prog, args, words)
        for path in targets:
            self.check_write(path, " ".join(words))

    def _written_paths(self, prog: str, args: list[str], words: list[str]) -> list[str]:
        """Paths this simple command deletes, moves or overwrites."""
        plain = [a for a in args if not a.startswith("-")]
        paths: list[str] = []
        if prog in _DESTROY or prog in _EDITORS:
            paths += plain
        elif prog == "mv":
            paths += plain  # sources disappear, the destination is overwritten
        elif prog in ("cp", "install", "ln", "rsync") and plain:
            paths.append(plain[-1])
        elif prog == "tee":
            paths += plain
        elif prog in ("sed", "perl") and any(
            a == "-i" or a.startswith("-i") or a == "--in-place" for a in args
        ):
            paths += plain[1:] if prog == "sed" else plain
        elif prog == "dd":
            paths += [a.split("=", 1)[1] for a in args if a.startswith("of=")]
        elif prog == "find" and ("-delete" in args or "-exec" in args):
            paths += plain[:1] or ["."]
            paths += [a for a in args if "/" in a or a.startswith(".")]
        elif prog == "chmod" or prog == "chown":
            pass
        for i, w in enumerate(words):
            if _REDIRECT.match(w) and i + 1 < len(words):
                paths.append(words[i + 1])
            elif re.match(r"^\d*>>?[^>&]", w):
                paths.append(re.sub(r"^\d*>>?", "", w))
        return paths

    def check_write(self, path: str, action: str) -> None:
        """Refuse deleting, moving or overwriting `path` when a rule protects it."""
        dnt = self.profile.do_not_touch
        name = PurePosixPath(path).name
        for protected in dnt.files:
            pname = PurePosixPath(protected).name
            if path == protected or name == pname or fnmatch.fnmatch(path, f"*{pname}*"):
                raise forbid(
                    "keep-protected-files", action, f"{protected} is on the do-not-touch list"
                )
        if "pg_wal" in path or "pg_xlog" in path:
            raise forbid(
                "no-delete-active-wal",
                action,
                "pg_wal holds active WAL; rotate old backups instead",
            )
        env_file = self.profile.app.env_file
        if not self.env_edit_allowed and (path == env_file or name == ".env"):
            raise forbid(
                "env-edit-only-llm-priority",
                action,
                "use the library's LLM_PROVIDER_PRIORITY edit (it backs .env up first); "
                "every other change goes through a PR and the deploy",
            )

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

    def check_downgrade(self, steps: int | None, action: str) -> None:
        """One step is allowed; more (or an uncounted target) needs `approved_by`."""
        if steps is not None and steps <= 1:
            return
        if self.approved_by:
            return
        what = f"{steps} steps" if steps is not None else "a target that is not a counted step"
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
