"""Armor on the server: the rules held by the server itself, for what no guard reads.

The guards (runbook.safety.guards) read every command the session sends; a
root shell outside the runbook, an interpreter or a form the parser misses is
not read at all. Armor makes the server refuse those too. The runbook
installs it through the session (a step of every changing scenario's
preflight) and `health_check` verifies it; each piece is one check:

| piece | how it holds | where the platform does not allow it |
|---|---|---|
| immutable files | `chattr +i` on each do-not-touch file (`lsattr` reads it back): `rm`, `mv`, `>` and editors fail, for root too | a filesystem without the attribute (overlayfs, tmpfs) or a process without CAP_LINUX_IMMUTABLE: "not available on this filesystem" / "... without CAP_LINUX_IMMUTABLE" |
| app repo hooks | `reference-transaction` in the app's checkout (git runs it for every ref update, `--no-verify` does not skip it), plus `pre-commit` and `commit-msg` as a second line | a `core.hooksPath` pointing elsewhere is reported as failed |
| origin protects main | sandbox and twin: the bare origin's `pre-receive` (their build installs it; it stands for GitHub); production: `GET /repos/{owner}/{repo}/branches/{branch}/protection` read back | no token or no API: failed, with the reason |
| evidence dumps | `pg_dump -Fc` of each renamed `dealix_corrupt_*` database into `<backups.dir>/evidence/`, made immutable | as immutable files |

The reference-transaction rule (`hook_reference_transaction`): a branch
(`refs/heads/*`) or a detached `HEAD` may only be moved to a commit that
origin already has (contained in a `refs/remotes/origin/*` ref); so `git
pull --ff-only`, `git checkout <sha>` and `git reset --hard <older sha>`
work, and any commit made on the server (porcelain, plumbing, aliases,
`commit-tree` + `update-ref`) cannot be put on a ref. A kept branch
(`do_not_touch.no_force_delete_branches`) is never moved nor deleted, and a
protected branch (`main`) is never deleted. Refs that are not branches
(remote-tracking refs, tags, stash) are left alone.

What armor does not hold: a root shell can lift it (`chattr -i`, remove a
hook, `git config core.hooksPath`); the guard refuses lifting it through the
runbook (rule `keep-armor`), and the next preflight or health check shows a
piece missing.

Example (in a notebook)::

    s.armor.install()      # changing: dry-run, confirmation and guards apply
    s.armor.verify()       # read-only: one Piece per protected object
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runbook.ops.backups import literal, tool
from runbook.safety.attempt import attempt

if TYPE_CHECKING:
    from runbook.core.context import OpsContext

#: written into every hook the armor installs: how verify() knows its own hooks
MARK = "dealix-runbook armor v1"
#: where the evidence dumps of renamed corrupt databases go, under backups.dir
EVIDENCE_DIR = "evidence"

HOLDING, MISSING, NOT_AVAILABLE = "holding", "missing", "not available"
NO_FS = "not available on this filesystem"
NO_CAP = "not available: this user lacks CAP_LINUX_IMMUTABLE (not root, or a container without it)"

APP_HOOKS = ("reference-transaction", "pre-commit", "commit-msg")


@dataclass(frozen=True)
class Piece:
    """One piece of armor and whether it holds now.

    >>> Piece("immutable /opt/dealix/.env.pre-v3.0.0.bak", HOLDING, "lsattr: ----i----").passed
    True
    >>> Piece("immutable /x", NOT_AVAILABLE, NO_FS).passed is None
    True
    """

    name: str
    status: str
    detail: str

    @property
    def passed(self) -> bool | None:
        if self.status == NOT_AVAILABLE:
            return None
        return self.status == HOLDING

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _not_available(stderr: str) -> str | None:
    """Why chattr/lsattr cannot work here, from its complaint, or None.

    >>> _not_available("lsattr: Inappropriate ioctl for device While reading flags on /x")
    'not available on this filesystem'
    >>> _not_available("chattr: Operation not permitted while setting flags on /x").startswith(
    ...     "not available: this user")
    True
    >>> _not_available("No such file or directory") is None
    True
    """
    low = stderr.lower()
    if "inappropriate ioctl" in low or "operation not supported" in low:
        return NO_FS
    if "operation not permitted" in low:
        return NO_CAP
    return None


def _is_immutable(lsattr_line: str) -> bool:
    """`lsattr -d` output: the flags column holds an `i`.

    >>> _is_immutable("----i---------e------- /tmp/x")
    True
    >>> _is_immutable("--------------e------- /tmp/x")
    False
    """
    flags = lsattr_line.split(maxsplit=1)[0] if lsattr_line.strip() else ""
    return "i" in flags


def hook_reference_transaction(kept: list[str], protected: list[str]) -> str:
    """The app repo's `reference-transaction` hook (POSIX sh; see the module docstring).

    >>> text = hook_reference_transaction(["server-backup-1"], ["main"])
    >>> "server-backup-1" in text and MARK in text
    True
    """
    q = shlex.quote
    return f"""#!/bin/sh
# {MARK}: installed by the Dealix runbook (runbook.ops.armor). Do not edit on the server.
# Branches and a detached HEAD move only to commits origin has; kept branches never move;
# protected branches are never deleted. git runs this for every ref update (--no-verify
# does not skip it); a non-zero exit in the "prepared" state aborts the whole update.
[ "$1" = prepared ] || exit 0
KEPT={q(" ".join(kept))}
PROTECTED={q(" ".join(protected))}
refuse() {{
  echo "refused by the server's armor (Dealix runbook): $1" >&2
  echo "  fixes go through a pull request on GitHub, then the deploy notebook" >&2
  exit 1
}}
zero() {{ case "$1" in *[!0]*) return 1 ;; *) return 0 ;; esac; }}
while read -r old new ref; do
  case "$ref" in
    refs/heads/*) branch=${{ref#refs/heads/}} ;;
    HEAD) branch= ;;
    *) continue ;;
  esac
  current=$(git rev-parse -q --verify "$ref^{{object}}" 2>/dev/null)
  [ -n "$current" ] && [ "$current" = "$new" ] && continue
  for k in $KEPT; do
    if [ "$branch" = "$k" ] && [ -n "$current" ]; then
      refuse "$ref is kept (do-not-touch): it is never moved or deleted"
    fi
  done
  if zero "$new"; then
    for p in $PROTECTED; do
      [ "$branch" = "$p" ] && refuse "$ref is protected: it is never deleted"
    done
    continue
  fi
  if [ -z "$(git for-each-ref --count=1 --contains "$new" refs/remotes/origin 2>/dev/null)" ]; then
    refuse "$ref would move to $new, a commit origin does not have (no commits on the server)"
  fi
done
exit 0
"""


def hook_no_commit(name: str) -> str:
    """`pre-commit` / `commit-msg`: the second line, for a commit made with the porcelain.

    >>> "no commits on the server" in hook_no_commit("pre-commit")
    True
    """
    return f"""#!/bin/sh
# {MARK}: installed by the Dealix runbook (runbook.ops.armor). Do not edit on the server.
# {name}: no commits on the server (the reference-transaction hook holds even with --no-verify).
echo "refused by the server's armor (Dealix runbook): no commits on the server;" >&2
echo "  fixes go through a pull request on GitHub, then the deploy notebook" >&2
exit 1
"""


def hook_origin_pre_receive(protected: list[str], kept: list[str]) -> str:
    """The bare origin's `pre-receive`, standing for GitHub's branch protection.

    Pushes to a protected branch (`main`) are refused: changes reach it by a
    merged pull request, which on the sandbox and the twin is a ref update on
    the origin itself (what GitHub's merge button does), not a push. A kept
    branch is never deleted nor moved by a push.

    >>> "Protected branch" in hook_origin_pre_receive(["main"], ["kept"])
    True
    """
    q = shlex.quote
    return f"""#!/bin/sh
# {MARK}: the origin's branch protection (stands for GitHub's; see runbook.ops.armor).
PROTECTED={q(" ".join(protected))}
KEPT={q(" ".join(kept))}
while read -r old new ref; do
  branch=${{ref#refs/heads/}}
  for p in $PROTECTED $KEPT; do
    if [ "$branch" = "$p" ]; then
      echo "remote: error: GH006: Protected branch update failed for $ref." >&2
      echo "remote: error: Changes must be made through a pull request." >&2
      exit 1
    fi
  done
done
exit 0
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Armor:
    """Install and verify the server's armor for one run (see the module docstring)."""

    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        self.profile = ctx.profile
        self.dnt = ctx.profile.do_not_touch
        #: what the last install() or verify() found, for the record
        self.pieces: list[Piece] = []

    # ------------------------------------------------------------- hooks
    def app_hooks(self) -> dict[str, str]:
        """The hooks the app's checkout gets, by name."""
        kept = list(self.dnt.no_force_delete_branches)
        protected = list(self.dnt.protected_branches)
        return {
            "reference-transaction": hook_reference_transaction(kept, protected),
            "pre-commit": hook_no_commit("pre-commit"),
            "commit-msg": hook_no_commit("commit-msg"),
        }

    def hooks_dir(self) -> tuple[str, str | None]:
        """The app's hooks directory, and the core.hooksPath that moved it elsewhere (or None)."""
        app = self.profile.app.dir
        r = self.ctx.probe(
            ["git", "-C", app, "rev-parse", "--absolute-git-dir"], warn=True, label="armor"
        )
        git_dir = r.stdout.strip() or posixpath.join(app, ".git")
        moved = self.ctx.probe(
            ["git", "-C", app, "config", "--get", "core.hooksPath"],
            accept=(0, 1),
            label="armor",
        ).stdout.strip()
        return posixpath.join(git_dir, "hooks"), moved or None

    # ------------------------------------------------------------ verify
    def verify(self) -> list[Piece]:
        """Every piece as it stands now (read-only)."""
        pieces = [self._file_piece(f) for f in self.dnt.files]
        pieces += self._hook_pieces()
        pieces.append(self._origin_piece())
        pieces += self._evidence_pieces()
        self.pieces = pieces
        return pieces

    def _lsattr(self, path: str) -> tuple[str, str | None]:
        """(flags line, why not available or None); flags line empty when the file is absent."""
        r = self.ctx.probe(["lsattr", "-d", path], warn=True, label="lsattr")
        if r.ok:
            return r.stdout.strip(), None
        why = _not_available(r.stderr)
        if why is None and "no such file" not in r.stderr.lower():
            why = f"not available: lsattr failed ({r.tail(1)})"
        return "", why

    def _file_piece(self, path: str, what: str = "immutable") -> Piece:
        name = f"{what} {path}"
        line, why = self._lsattr(path)
        if why:
            return Piece(name, NOT_AVAILABLE, why)
        if not line:
            return Piece(name, MISSING, f"{path} does not exist")
        if _is_immutable(line):
            return Piece(name, HOLDING, f"lsattr: {line.split()[0]}")
        return Piece(name, MISSING, f"lsattr: {line.split()[0]} (no i: it can be deleted)")

    def _hook_pieces(self) -> list[Piece]:
        hooks, moved = self.hooks_dir()
        if moved:
            return [
                Piece(
                    "app repo hooks",
                    MISSING,
                    f"core.hooksPath is set to {moved}: git does not run the armor's hooks; "
                    f"unset it (git -C {self.profile.app.dir} config --unset core.hooksPath)",
                )
            ]
        want = self.app_hooks()
        paths = [posixpath.join(hooks, n) for n in want]
        # one probe: each hook's sha256 and whether it is executable
        script = "; ".join(
            f"if [ -x {shlex.quote(p)} ]; then sha256sum < {shlex.quote(p)}; else echo absent; fi"
            for p in paths
        )
        r = self.ctx.probe(script, shell=True, warn=True, label="armor-hooks")
        got = [line.split()[0] if line.split() else "absent" for line in r.stdout.splitlines()]
        got += ["absent"] * (len(paths) - len(got))
        pieces = []
        for (n, text), sha in zip(want.items(), got, strict=False):
            name = f"app repo hook {n}"
            if sha == _sha(text):
                pieces.append(Piece(name, HOLDING, f"{posixpath.join(hooks, n)} installed"))
            elif sha == "absent":
                pieces.append(Piece(name, MISSING, f"{posixpath.join(hooks, n)} absent"))
            else:
                pieces.append(Piece(name, MISSING, f"{posixpath.join(hooks, n)} differs"))
        return pieces

    def origin_url(self) -> str:
        """origin's URL as git uses it (`insteadOf` applied)."""
        r = self.ctx.probe(
            ["git", "-C", self.profile.app.dir, "ls-remote", "--get-url", "origin"],
            warn=True,
            label="armor",
        )
        return r.stdout.strip()

    def _origin_piece(self) -> Piece:
        name = f"origin protects {', '.join(self.dnt.protected_branches)}"
        url = self.origin_url()
        path = url[len("file://") :] if url.startswith("file://") else url
        if path.startswith("/"):
            hook = posixpath.join(path, "hooks", "pre-receive")
            r = self.ctx.probe(
                f"[ -x {shlex.quote(hook)} ] && grep -c {shlex.quote(MARK)} {shlex.quote(hook)}",
                shell=True,
                warn=True,
                label="armor-origin",
            )
            if r.ok:
                return Piece(name, HOLDING, f"{hook}: refuses pushes to protected branches")
            return Piece(
                name,
                MISSING,
                f"{hook} absent or not the branch protection hook (the sandbox/twin build "
                "installs it: it stands for GitHub)",
            )
        return self._github_protection(name)

    def _github_protection(self, name: str) -> Piece:
        """Branch protection read back through GitHub's API (production)."""
        from runbook.ops.github import GitHub

        gh = GitHub(self.ctx)
        token = self.profile.secrets.github_token
        if not self.ctx.secrets.get(token, required=False):
            # read-only and not this run's business to demand: say it could not be read
            return Piece(
                name,
                NOT_AVAILABLE,
                f"not available: no GitHub token ({token}) to read the branch protection "
                f"of {gh.repo}; export {token} to verify it",
            )
        problems: list[str] = []
        for branch in self.dnt.protected_branches:
            with attempt() as a:
                resp = gh.get(
                    f"/repos/{gh.repo}/branches/{branch}/protection",
                    headers=gh._auth(),
                    accept=(200, 404),
                )
            if a.error is not None:
                return Piece(name, MISSING, f"could not read GitHub's branch protection: {a.error}")
            if resp.status == 404:
                problems.append(f"{branch}: not protected on GitHub")
                continue
            body = resp.json() or {}
            if not body.get("required_pull_request_reviews"):
                problems.append(f"{branch}: pushes allowed (no pull request required)")
            for key in ("allow_force_pushes", "allow_deletions"):
                if (body.get(key) or {}).get("enabled"):
                    problems.append(f"{branch}: {key} enabled")
            if not (body.get("enforce_admins") or {}).get("enabled"):
                problems.append(f"{branch}: admins may bypass (enforce_admins off)")
        if problems:
            return Piece(name, MISSING, "; ".join(problems))
        return Piece(name, HOLDING, f"GitHub branch protection on {gh.repo}: PR required")

    def evidence_dir(self) -> str:
        return posixpath.join(self.profile.backups.dir, EVIDENCE_DIR)

    def _evidence_pieces(self) -> list[Piece]:
        d = self.evidence_dir()
        r = self.ctx.probe(
            f"ls -1 {shlex.quote(d)} 2>/dev/null | grep -E '\\.(dump|tar\\.gz)$' || true",
            shell=True,
            label="armor-evidence",
        )
        return [
            self._file_piece(posixpath.join(d, n), "evidence dump")
            for n in sorted(r.stdout.split())
        ]

    # ----------------------------------------------------------- install
    def install(self) -> list[Piece]:
        """Put every missing piece in place (changing), then verify; returns the pieces."""
        before = {p.name: p for p in self.verify()}
        for path in self.dnt.files:
            if before[f"immutable {path}"].status == MISSING:
                self._chattr(path)
        if any(p.name.startswith("app repo hook") and p.status == MISSING for p in before.values()):
            hooks, moved = self.hooks_dir()
            if not moved:
                for n, text in self.app_hooks().items():
                    self.ctx.run(
                        ["install", "-m", "0755", "/dev/stdin", posixpath.join(hooks, n)],
                        stdin=text.encode(),
                        label="armor-hook",
                    )
        if self.ctx.dry_run:
            return list(before.values())
        return self.verify()

    def _chattr(self, path: str) -> str | None:
        """`chattr +i path`; why it is not available here, or None when it worked."""
        r = self.ctx.run(["chattr", "+i", path], warn=True, label="chattr")
        if r.dry_run or r.ok:
            return None
        return _not_available(r.stderr) or r.tail(1)

    def seal_dump(self, database: str) -> Piece:
        """`pg_dump -Fc` of `database` into the evidence dir, then immutable (changing).

        Called when restore_incident renames production to `dealix_corrupt_*`, so the
        evidence survives even a DROP DATABASE nobody should run. A database too
        damaged to dump (a corrupt catalog: pg_dump cannot read it) is kept as its
        files instead: a tar of `<data_directory>/base/<oid>`, sealed the same way.
        """
        from runbook.clock import utc_now

        d = self.evidence_dir()
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        path = posixpath.join(d, f"{database}-{stamp}.dump")
        pg_dump = tool(self.profile.postgres.psql, "pg_dump")
        q = shlex.quote
        r = self.ctx.run(
            f"mkdir -p {q(d)} && {pg_dump} -Fc -d {q(database)} > {q(path)}.part "
            f"&& mv {q(path)}.part {q(path)}",
            shell=True,
            warn=True,
            timeout=3600,
            label="pg_dump-evidence",
        )
        if r.dry_run:
            return Piece(f"evidence dump {path}", MISSING, "dry run: would dump and seal")
        how = "pg_dump -Fc"
        if not r.ok:
            self.ctx.run(["rm", "-f", f"{path}.part"], warn=True, label="pg_dump-evidence")
            failed = r.tail(1)
            path = posixpath.join(d, f"{database}-{stamp}.files.tar.gz")
            made = self._tar_files(database, path)
            if made is not None:
                return Piece(
                    f"evidence dump {path}",
                    MISSING,
                    f"pg_dump failed ({failed}) and its files could not be kept: {made}",
                )
            how = f"its files (pg_dump failed: {failed})"
        why = self._chattr(path)
        piece = self._file_piece(path, "evidence dump")
        if why and piece.status != HOLDING:
            return Piece(piece.name, NOT_AVAILABLE, f"{how} kept, not sealed: {why}")
        return Piece(piece.name, piece.status, f"{how}; {piece.detail}")

    def _tar_files(self, database: str, path: str) -> str | None:
        """A tar of the database's directory under the data directory; why not, or None."""
        from runbook.ops.postgres import Postgres

        with attempt() as a:
            row = Postgres(self.ctx).query(
                "SELECT d.oid, current_setting('data_directory') AS data "  # noqa: S608 - the name via literal()
                f"FROM pg_database d WHERE d.datname = {literal(database)}",
                database="postgres",
            )
        if a.error is not None:
            return str(a.error).splitlines()[0]
        if row.empty:
            return f"no database {database}"
        base = posixpath.join(str(row["data"][0]), "base")
        q = shlex.quote
        r = self.ctx.run(
            f"tar -C {q(base)} -czf {q(path)} {int(row['oid'][0])}",
            shell=True,
            warn=True,
            timeout=3600,
            label="evidence-files",
        )
        return None if r.ok else r.tail(2)


def record_pieces(ctx: Any, pieces: list[Piece], *, prefix: str = "Armor: ") -> None:
    """One check per piece; "not available" is never counted as passed."""
    for p in pieces:
        ctx.check(
            f"{prefix}{p.name}",
            expected=HOLDING,
            actual=p.status if p.status != NOT_AVAILABLE else p.detail,
            passed=p.passed,
            note=p.detail,
        )


def summary(pieces: list[Piece]) -> str:
    """One line for a health check row.

    >>> summary([Piece("a", HOLDING, ""), Piece("b", NOT_AVAILABLE, NO_FS)])
    '1 holding, 1 not available'
    """
    counts: dict[str, int] = {}
    for p in pieces:
        counts[p.status] = counts.get(p.status, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items())
