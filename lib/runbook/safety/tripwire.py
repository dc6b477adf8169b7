"""Tripwires: after every change, read what the rules protect again and stop the run if it moved.

The guards (runbook.safety.guards) judge a command's text before it runs; no
reader of shell text can see everything a command will do (a script file, an
interpreter, a root shell beside the run). The tripwire judges the server's
state instead. Before the session's first real change it records every
protected object of the profile; after every changing command (and file
write) it reads them all again in ONE remote script (one SSH round trip, one
psql call) and compares::

    object                      recorded as                         trips when
    do-not-touch file           sha256, inode, size, mode, owner    gone, content or inode changed
    .env                        sha256 without LLM_PROVIDER_PRIORITY  any other line changed
    kept branch (server/origin) its SHA                             moved or deleted
    main on the server          its SHA                             moved to a commit origin's main lacks
    main in origin              its SHA (ls-remote, if reachable)   rewound, or set to the server's own commit
    production database         OID in pg_database                  gone or replaced, outside restore_incident
    dealix_corrupt_* database   OID in pg_database                  gone before it is corrupt_db_keep_days old
    alembic revision            alembic_version, the files' chain   > 1 step below the run's highest, no approved_by
    active WAL                  pg_wal listing, the REDO segment    a segment at/after REDO gone; data dir gone

A trip raises `Tripped` (outcome "tripped", exit 9): it names the command and
each object, and says what was put back (a file from the copy taken before the
first change, a ref from its recorded SHA with `git update-ref`, a renamed
production database renamed back) and what could not be (a dropped database).
The copies of protected files (they hold secrets) stay on the server, in a
0700 directory beside the host lock, 0600 each, and are removed when the run
ends without a trip; they never reach the evidence.

What a scenario's procedure allows does not trip: restore_incident
(procedure="restore_incident") replaces the production database;
rollback's one-step downgrade is within the rule; llm_provider_down's edit of
LLM_PROVIDER_PRIORITY is left out of the .env hash; deploy's fast-forward of
main to origin's main is what origin holds.

Example (what the session's gate does; see runbook.session.gate)::

    wire = Tripwire(gate._raw, gate.profile, gate.guards, ...)
    wire.arm()                   # before the first change: copies + baseline
    ...run the change...
    wire.check("rm -f /opt/dealix/.env.pre-v3.0.0.bak")   # raises Tripped
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runbook.core.profile import Profile
from runbook.core.transport import ExecOutcome
from runbook.errors import Forbidden, Tripped
from runbook.safety.guards import Guards

# where alembic's migration files live in the app's checkout (scenarios/_release.py too)
MIGRATIONS_DIR = "migrations/versions"
# .env's one line that scenario 4 may edit in place
ENV_EDITABLE = "LLM_PROVIDER_PRIORITY"
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_REV = re.compile(r"""^revision\b[^=]*=\s*['"]([^'"]+)['"]""")
_DOWN = re.compile(r"""^down_revision\b[^=]*=\s*(None|['"]([^'"]+)['"])""")


@dataclass
class Snapshot:
    """One reading of every protected object (see `parse`)."""

    files: dict[str, dict[str, str] | None] = field(default_factory=dict)
    env: str | None = None  # hash of .env without its editable line; "" when missing
    envx: str | None = None  # the same, also without the keys a step may change now
    refs: dict[str, str] = field(default_factory=dict)  # server refs (refs/heads/x -> sha)
    origin: dict[str, str] | None = None  # origin's refs; None when unreachable
    main_on_origin: str = "unknown"  # yes / no / unknown: server main within origin's main
    origin_main_ff: str = "unknown"  # yes / no / unknown: origin main moved forward only
    head: str = ""
    dbs: dict[int, str] | None = None  # oid -> name; None when Postgres did not answer
    alembic: list[str] | None = None  # None: not readable; []: no revision
    chain: dict[str, str | None] = field(default_factory=dict)  # revision -> down_revision
    redo: str | None = None
    wal: list[str] | None = None
    data_dir: bool | None = None


@dataclass
class Violation:
    object: str
    rule: str
    what: str
    restore: Callable[[], str | None] | None = None  # returns None when put back, else why not

    def to_dict(self) -> dict[str, str]:
        return {"object": self.object, "rule": self.rule, "what": self.what}


class Tripwire:
    """Records the protected objects before the first change and checks them after each."""

    def __init__(
        self,
        execute: Callable[..., ExecOutcome],
        profile: Profile,
        guards: Guards,
        *,
        run_id: str,
        log: Callable[[dict[str, Any]], None],
    ):
        # the gate's own way to the server (its first connection): the tripwire logs its reads
        self._execute = execute
        self.profile = profile
        self.guards = guards
        self.run_id = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
        self.log = log
        self.armed = False
        self.baseline: Snapshot | None = None
        self.last: Snapshot | None = None
        self.tripped: Tripped | None = None
        self.copies: dict[str, str] = {}  # protected path -> its copy on the server
        self.costs_ms: list[float] = []
        self.checks = 0
        self.highest_rev: str | None = None
        self.allowed_env: tuple[str, ...] = ()
        self.immutable: set[str] = set()
        self.prod_oid: int | None = None
        self.chain: dict[str, str | None] = {}

    # ------------------------------------------------------------ the remote side
    @property
    def copy_dir(self) -> str:
        lock_dir = self.profile.app.lock_path.rstrip("/").rsplit("/", 1)[0] or "/"
        return f"{lock_dir}/dealix-runbook-tripwire/{self.run_id}"

    def _files(self) -> list[str]:
        return list(self.profile.do_not_touch.files)

    def _branches(self) -> list[str]:
        dnt = self.profile.do_not_touch
        return list(dict.fromkeys([*dnt.protected_branches, *dnt.no_force_delete_branches]))

    def script(self) -> str:
        """The one shell script that reads every protected object (read-only)."""
        q = shlex.quote
        app = q(self.profile.app.dir)
        lines = ["export GIT_TERMINAL_PROMPT=0 LC_ALL=C"]
        for i, path in enumerate(self._files()):
            p = q(path)
            lines.append(
                f"if [ -e {p} ]; then echo \"file|{i}|$(stat -c '%i|%s|%a|%u:%g' {p})|"
                f"$(sha256sum < {p} | cut -c1-64)\"; else echo 'file|{i}|missing'; fi"
            )
        env = q(self.profile.app.env_file)
        lines.append(
            f'if [ -e {env} ]; then echo "env|$(grep -v -E '
            f"'^[[:space:]]*(export[[:space:]]+)?{ENV_EDITABLE}[[:space:]]*=' {env} "
            "| sha256sum | cut -c1-64)\"; else echo 'env|'; fi"
        )
        if self.allowed_env:
            keys = "|".join([ENV_EDITABLE, *self.allowed_env])
            lines.append(
                f'if [ -e {env} ]; then echo "envx|$(grep -v -E '
                f"'^[[:space:]]*(export[[:space:]]+)?({keys})[[:space:]]*=' {env} "
                "| sha256sum | cut -c1-64)\"; else echo 'envx|'; fi"
            )
        heads = " ".join(q(f"refs/heads/{b}") for b in self._branches())
        lines += [
            f"refs=$(git -C {app} for-each-ref --format='ref|%(refname)|%(objectname)' "
            f"{heads} refs/remotes/origin/main 2>/dev/null)",
            "printf '%s\\n' \"$refs\"",
            f'echo "head|$(git -C {app} rev-parse -q --verify HEAD 2>/dev/null)"',
            f"url=$(git -C {app} remote get-url origin 2>/dev/null)",
            # origin unreachable at the baseline: not asked again (each try may wait 5 s)
            f"lr=$(timeout 5 git -C {app} ls-remote origin {heads} 2>/dev/null) "
            "&& echo 'origin|ok' || echo 'origin|unreachable'"
            if self.baseline is None or self.baseline.origin is not None
            else "lr=''; echo 'origin|unreachable'",
            'printf \'%s\\n\' "$lr" | awk \'NF==2{print "oref|" $2 "|" $1}\'',
            # ancestry: merge-base exits 0 (yes), 1 (no), 128 (an object it lacks): asked
            # in the checkout, then in origin when it is a local directory
            "anc() { git -C " + app + ' merge-base --is-ancestor "$1" "$2" 2>/dev/null; r=$?; '
            'if [ $r -gt 1 ] && [ -d "$url" ]; then git --git-dir="$url" merge-base '
            '--is-ancestor "$1" "$2" 2>/dev/null; r=$?; fi; '
            "case $r in 0) echo yes ;; 1) echo no ;; *) echo unknown ;; esac; }",
            "om=$(printf '%s\\n' \"$lr\" | awk '$2==\"refs/heads/main\"{print $1}')",
            "sm=''; ot=''",
            "for l in $refs; do case $l in ref\\|refs/heads/main\\|*) sm=${l##*|} ;; "
            "ref\\|refs/remotes/origin/main\\|*) ot=${l##*|} ;; esac; done",
            '[ -n "$om" ] || om=$ot',
            'if [ -z "$sm" ] || [ -z "$om" ]; then echo \'mainok|unknown\'; '
            'elif [ "$sm" = "$om" ]; then echo \'mainok|yes\'; '
            'else echo "mainok|$(anc "$sm" "$om")"; fi',
        ]
        prev = (self.last.origin or {}).get("refs/heads/main") if self.last else None
        if prev:
            lines.append(
                f'if [ -z "$om" ] || [ "$om" = {q(prev)} ]; then echo \'ff|yes\'; '
                f'else echo "ff|$(anc {q(prev)} "$om")"; fi'
            )
        psql = self.profile.postgres.psql
        sql = [
            "select 'conn|ok'",
            "select 'db|' || oid || '|' || datname from pg_database",
            "select 'datadir|' || current_setting('data_directory')",
            "select 'redo|' || pg_walfile_name(redo_lsn) from pg_control_checkpoint() "
            "where not pg_is_in_recovery()",
            "select 'alembic|' || version_num from alembic_version",
        ]
        cs = " ".join(f"-c {q(s)}" for s in sql)
        db = q(self.profile.postgres.database)
        lines += [
            f"sq=$({psql} -X -q -At -d {db} {cs} 2>/dev/null)",
            'case "$sq" in *"conn|ok"*) echo \'alembic_read|yes\' ;; *) '
            f"sq=$({psql} -X -q -At -d postgres {' '.join(f'-c {q(s)}' for s in sql[:4])} "
            "2>/dev/null) ;; esac",
            "printf '%s\\n' \"$sq\"",
            "dd=$(printf '%s\\n' \"$sq\" | sed -n 's/^datadir|//p')",
            f'[ -n "$dd" ] || dd={q(self.profile.postgres.data_dir)}',
            f"if [ -d {q(self.profile.postgres.data_dir)} ]; then echo 'datadir_exists|yes'; "
            "else echo 'datadir_exists|no'; fi",
            'for w in "$dd/pg_wal" "$dd"/[0-9]*/*/pg_wal; do if [ -d "$w" ]; then '
            "echo 'wal_dir|'\"$w\"; ls -1 \"$w\" | sed 's/^/wal|/'; break; fi; done",
            f"cd {app} 2>/dev/null && grep -H -E '^(revision|down_revision)\\b' "
            f"{MIGRATIONS_DIR}/*.py 2>/dev/null | sed 's/^/mig|/'",
            "true",
        ]
        return "\n".join(lines) + "\n"

    def _read(self) -> tuple[Snapshot, float]:
        out: list[bytes] = []
        t0 = time.monotonic()
        self._execute(self.script(), on_stdout=out.append, on_stderr=lambda b: None, timeout=60)
        cost = (time.monotonic() - t0) * 1000
        return parse(b"".join(out).decode("utf-8", "replace"), self._files()), cost

    def _exec(self, command: str, keep: int = 300) -> tuple[int | None, str]:
        out: list[bytes] = []
        r = self._execute(command, on_stdout=out.append, on_stderr=out.append, timeout=120)
        return r.exit_code, b"".join(out).decode("utf-8", "replace")[-keep:]

    # ------------------------------------------------------------ arm and check
    def arm(self) -> None:
        """Before the first change: copy the protected files aside, record the baseline."""
        if self.armed:
            return
        q = shlex.quote
        parts = [f"umask 077 && mkdir -p {q(self.copy_dir)} && chmod 700 {q(self.copy_dir)}"]
        paths = [*self._files(), self.profile.app.env_file]
        for i, path in enumerate(paths):
            copy = f"{self.copy_dir}/{i}"
            # copied by number: the copy's name never repeats the protected name
            parts.append(f"{{ [ ! -e {q(path)} ] || cp -p {q(path)} {q(copy)}; }}")
            parts.append(f"{{ [ ! -e {q(copy)} ] || chmod 600 {q(copy)}; }}")
            self.copies[path] = copy
        code, tail = self._exec(" && ".join(parts))
        if code != 0:
            self.copies = {}
        # which files the server's armor made immutable: put back, they are again
        attrs = " ; ".join(f"lsattr -d {q(p)} 2>/dev/null" for p in self._files())
        if attrs:
            _, listing = self._exec(attrs, keep=100_000)
            for line in listing.splitlines():
                flags, _, path = line.partition(" ")
                if "i" in flags and path.strip() in self._files():
                    self.immutable.add(path.strip())
        snap, cost = self._read()
        self.baseline = self.last = snap
        self._note_chain(snap)
        self.costs_ms.append(cost)
        self.armed = True
        self.log(
            {
                "kind": "tripwire",
                "event": "armed",
                "objects": self.objects(snap),
                "copies": self.copy_dir if self.copies else None,
                "copy_error": None if code == 0 else tail,
                "cost_ms": round(cost, 1),
            }
        )

    def allow_env(self, keys: tuple[str, ...], why: str) -> None:
        """Let the next changes rewrite these `.env` keys (a step's own, e.g. the
        rotation of scenario 6); `allow_env((), "")` ends it. Read again at once, so
        that the next comparison leaves exactly these keys out."""
        self.allowed_env = tuple(keys)
        self.log({"kind": "tripwire", "event": "allow", "env_keys": list(keys), "why": why})
        if self.armed and self.last is not None:
            snap, cost = self._read()
            self.costs_ms.append(cost)
            if not self.compare(self.last, snap):
                self.last = self._carry(self.last, snap)

    def _refresh_env_copy(self) -> None:
        """After an allowed .env change: the copy holds the new file (never put back old keys)."""
        env = self.profile.app.env_file
        copy = self.copies.get(env)
        if copy:
            q = shlex.quote
            self._exec(f"cp -p {q(env)} {q(copy)} && chmod 600 {q(copy)}")

    def objects(self, snap: Snapshot) -> list[str]:
        """The names of the objects watched (no values: they may be secret)."""
        names = [f"file {p}" for p in self._files()] + [f"env {self.profile.app.env_file}"]
        names += [f"server ref {r}" for r in sorted(snap.refs)]
        if snap.origin is not None:
            names += [f"origin ref {r}" for r in sorted(snap.origin)]
        if snap.dbs is not None:
            names += [f"database {n} (oid {o})" for o, n in sorted(snap.dbs.items())]
        names += ["alembic revision", "active WAL", "data directory"]
        return names

    def check(self, command: str) -> None:
        """After a changing command: read again; raise `Tripped` if a rule's object moved."""
        if not self.armed or self.last is None:
            return
        snap, cost = self._read()
        self.costs_ms.append(cost)
        self.checks += 1
        violations = self.compare(self.last, snap)
        if not violations:
            if self.allowed_env and snap.env != self.last.env:
                self._refresh_env_copy()
            self._note_chain(snap)
            self.last = self._carry(self.last, snap)
            self.log(
                {
                    "kind": "tripwire",
                    "event": "checked",
                    "after": command,
                    "ok": True,
                    "cost_ms": round(cost, 1),
                }
            )
            return
        restored: list[str] = []
        not_restored: list[str] = []
        for v in violations:
            if v.restore is None:
                not_restored.append(f"{v.object}: nothing to put it back from")
                continue
            try:
                why = v.restore()
            except Exception as exc:  # the trip is reported whatever the put-back did
                why = f"{type(exc).__name__}: {exc}"
            if why is None:
                restored.append(v.object)
            else:
                not_restored.append(f"{v.object}: {why}")
        after, _ = self._read()
        self.tripped = Tripped(command, [v.to_dict() for v in violations], restored, not_restored)
        self.log(
            {
                "kind": "tripwire",
                "event": "tripped",
                "after": command,
                "ok": False,
                "violations": [v.to_dict() for v in violations],
                "put_back": restored,
                "not_put_back": not_restored,
                "still_changed": [v.object for v in self.compare(self.last, after)],
                "cost_ms": round(cost, 1),
            }
        )
        raise self.tripped

    def _carry(self, old: Snapshot, new: Snapshot) -> Snapshot:
        """The new reading, keeping what could not be read now from the last one."""
        if new.dbs is None:
            new.dbs = old.dbs
        if new.alembic is None:
            new.alembic = old.alembic
        if new.origin is None:
            new.origin = old.origin
        if new.wal is None or new.redo is None:
            # no REDO point to judge this listing by (Postgres down): the last one
            # that had one is compared at the next reading that has one
            new.wal, new.redo = old.wal, old.redo
        return new

    def _note_chain(self, snap: Snapshot) -> None:
        self.chain.update(snap.chain)
        prod = self.profile.postgres.database
        oid = next((o for o, n in (snap.dbs or {}).items() if n == prod), None)
        if oid is not None and oid != self.prod_oid:
            # a new production database (restore_incident's swap): its revision is
            # the backup's, counted from there
            self.prod_oid, self.highest_rev = oid, None
        if snap.alembic:
            rev = snap.alembic[0]
            if self.highest_rev is None or self._below(rev, self.highest_rev):
                self.highest_rev = rev

    def _below(self, upper: str, lower: str | None) -> int | None:
        """How many steps `lower` is below `upper` in the migrations' chain (None: not below)."""
        if upper not in self.chain:
            return None  # its chain is unknown: nothing is counted
        steps = 0
        rev_now: str | None = upper
        seen: set[str] = set()
        while rev_now is not None and rev_now not in seen:
            if rev_now == lower:
                return steps
            seen.add(rev_now)
            rev_now = self.chain.get(rev_now)
            steps += 1
        return steps if lower is None and rev_now is None else None

    # ------------------------------------------------------------ the rules
    def compare(self, old: Snapshot, new: Snapshot) -> list[Violation]:
        """What changed between two readings in a way a rule forbids."""
        out: list[Violation] = []
        out += self._compare_files(old, new)
        out += self._compare_refs(old, new)
        out += self._compare_dbs(old, new)
        out += self._compare_alembic(new)
        out += self._compare_wal(old, new)
        return out

    def _compare_files(self, old: Snapshot, new: Snapshot) -> list[Violation]:
        out: list[Violation] = []
        for path in self._files():
            before, after = old.files.get(path), new.files.get(path)
            if before is None or before == after:
                continue
            if after is None:
                what = "gone"
            elif after["sha256"] != before["sha256"]:
                what = "content changed"
            elif after["inode"] != before["inode"]:
                what = "replaced (a new inode, same content)"
            else:
                what = "mode or owner changed"
            out.append(
                Violation(f"file {path}", "keep-protected-files", what, self._put_file(path))
            )
        env = self.profile.app.env_file
        allowed = self.allowed_env and old.envx is not None
        if old.env and (new.envx != old.envx if allowed else new.env != old.env):
            others = ", ".join([ENV_EDITABLE, *self.allowed_env]) if allowed else ENV_EDITABLE
            what = "gone" if not new.env else f"a line other than {others} changed"
            out.append(
                Violation(
                    f"env {env}", "env-edit-only-llm-priority", what, self._put_file(env, True)
                )
            )
        return out

    def _put_file(self, path: str, env: bool = False) -> Callable[[], str | None] | None:
        copy = self.copies.get(path)
        if not copy:
            return None

        def put() -> str | None:
            q = shlex.quote
            prev = (self.last.files.get(path) if self.last else None) or {}
            cmd = f"cp {q(copy)} {q(path)}.tripwire-tmp"
            if prev.get("mode"):
                cmd += f" && chmod {q(prev['mode'])} {q(path)}.tripwire-tmp"
                cmd += f" && chown {q(prev['owner'])} {q(path)}.tripwire-tmp"
            if env:
                # the copy, but with the one line scenario 4 may have changed taken from
                # the current file, in its place (awk reads it from the environment:
                # no escape processing); mode and owner those of the current file
                pat = f"^[[:space:]]*(export[[:space:]]+)?{ENV_EDITABLE}[[:space:]]*="
                prog = (
                    f'$0 ~ /{pat}/ {{ if (!d) print (ENVIRON["L"] != "" ? '
                    f'ENVIRON["L"] : $0); d = 1; next }} {{ print }} '
                    f'END {{ if (!d && ENVIRON["L"] != "") print ENVIRON["L"] }}'
                )
                tmp = q(f"{path}.tripwire-tmp")
                cmd = (
                    f"L=$(grep -E {q(pat)} {q(path)} 2>/dev/null | tail -n1); export L; "
                    f"awk {q(prog)} {q(copy)} > {tmp} && "
                    f"{{ {{ [ -e {q(path)} ] && chmod --reference={q(path)} {tmp} && "
                    f"chown --reference={q(path)} {tmp}; }} || chmod 600 {tmp}; }}"
                )
            cmd += f" && mv -f {q(path)}.tripwire-tmp {q(path)}"
            if path in self.immutable:
                cmd += f" && chattr +i {q(path)}"  # the armor it had (layer 2)
            code, tail = self._exec(cmd)
            return None if code == 0 else f"copying it back failed (exit {code}): {tail}"

        return put

    def _compare_refs(self, old: Snapshot, new: Snapshot) -> list[Violation]:
        out: list[Violation] = []
        kept = self.profile.do_not_touch.no_force_delete_branches
        sides = [("server", old.refs, new.refs)]
        if old.origin is not None and new.origin is not None:
            sides.append(("origin", old.origin, new.origin))
        for name in kept:
            ref = f"refs/heads/{name}"
            for side, was, now in sides:
                before, after = was.get(ref), now.get(ref)
                if before and after != before:
                    out.append(
                        Violation(
                            f"{side} ref {ref}",
                            "no-force-delete-branch",
                            "deleted" if not after else f"moved {before[:12]} -> {after[:12]}",
                            self._put_ref(ref, before, origin=side == "origin"),
                        )
                    )
        main = "refs/heads/main"
        before, after = old.refs.get(main), new.refs.get(main)
        if before and after != before and (not after or new.main_on_origin == "no"):
            out.append(
                Violation(
                    f"server ref {main}",
                    "no-commit-on-server",
                    "deleted"
                    if not after
                    else f"moved to {after[:12]}, a commit origin's main does not hold",
                    self._put_ref(main, before, origin=False),
                )
            )
        if old.origin is not None and new.origin is not None:
            before, after = old.origin.get(main), new.origin.get(main)
            if before and after != before:
                why = None
                if not after:
                    why = "deleted"
                elif new.origin_main_ff == "no":
                    why = f"rewound or force-pushed {before[:12]} -> {after[:12]}"
                elif after in (new.head, new.refs.get(main)) and after != old.refs.get(
                    "refs/remotes/origin/main"
                ):
                    why = f"moved to {after[:12]}, the server's own commit (a push from the server)"
                if why:
                    out.append(
                        Violation(
                            f"origin ref {main}",
                            "no-push-to-main",
                            why,
                            self._put_ref(main, before, origin=True),
                        )
                    )
                    server_before = old.refs.get(main)
                    server_now = new.refs.get(main)
                    listed = any(v.object == f"server ref {main}" for v in out)
                    if (
                        after
                        and server_before
                        and server_now == after != server_before
                        and not listed
                    ):
                        # the commit that was pushed was made here: off main too
                        out.append(
                            Violation(
                                f"server ref {main}",
                                "no-commit-on-server",
                                f"moved to {after[:12]}, a commit made on the server and pushed",
                                self._put_ref(main, server_before, origin=False),
                            )
                        )
                        put_tracking = self._put_ref(
                            "refs/remotes/origin/main", before, origin=False
                        )
                        out[-1].restore = _both(out[-1].restore, put_tracking)
        return out

    def _put_ref(self, ref: str, sha: str, *, origin: bool) -> Callable[[], str | None]:
        def put() -> str | None:
            q = shlex.quote
            app = q(self.profile.app.dir)
            if origin:
                cmd = (
                    f'url=$(git -C {app} remote get-url origin) && [ -d "$url" ] && '
                    f'git --git-dir="$url" update-ref {q(ref)} {q(sha)}'
                )
            else:
                cmd = f"git -C {app} update-ref {q(ref)} {q(sha)}"
            code, tail = self._exec(cmd)
            if code == 0:
                return None
            if origin:
                return (
                    f"origin is not a directory on the server (exit {code}); set {ref} back "
                    f"to {sha} on the origin by hand"
                )
            return f"git update-ref failed (exit {code}): {tail}"

        return put

    def _compare_dbs(self, old: Snapshot, new: Snapshot) -> list[Violation]:
        if old.dbs is None or new.dbs is None:
            return []
        out: list[Violation] = []
        prod = self.profile.postgres.database
        pattern = self.profile.do_not_touch.corrupt_db_pattern
        prod_before = [o for o, n in old.dbs.items() if n == prod]
        prod_after = [o for o, n in new.dbs.items() if n == prod]
        if prod_before and prod_after != prod_before:
            try:
                self.guards.check_replace_production_db(prod, f"replace {prod}")
                if prod_before[0] not in new.dbs:
                    # replaced is allowed in the incident restore; dropped never is (evidence)
                    self.guards.check_drop_database(prod)
            except Forbidden:
                oid = prod_before[0]
                put: Callable[[], str | None]
                if oid in new.dbs and not prod_after:
                    what = f"renamed to {new.dbs[oid]} (oid {oid})"
                    put = self._rename_db(new.dbs[oid], prod)
                elif oid in new.dbs:
                    what = (
                        f"renamed to {new.dbs[oid]} (oid {oid}); oid {prod_after[0]} took its name"
                    )
                    put = lambda: "another database holds the name now: swap them back by hand"  # noqa: E731
                else:
                    what = f"dropped (oid {oid})"
                    put = lambda: (  # noqa: E731
                        "a dropped database cannot be put back: restore it from the "
                        "newest backup (restore_incident)"
                    )
                out.append(
                    Violation(f"database {prod}", "no-restore-into-production-db", what, put)
                )
        for oid, name in old.dbs.items():
            if not fnmatch.fnmatch(name, pattern) or oid in new.dbs:
                continue
            try:
                self.guards.check_drop_database(name)
            except Forbidden as exc:
                out.append(
                    Violation(
                        f"database {name}",
                        "keep-corrupt-db-7-days",
                        f"dropped (oid {oid}): {exc}".split(" [runbook")[0],
                        lambda: (
                            "a dropped database cannot be put back (its evidence is "
                            "gone unless a dump of it was kept)"
                        ),
                    )
                )
        return out

    def _rename_db(self, now: str, back: str) -> Callable[[], str | None]:
        def put() -> str | None:
            sql = f'ALTER DATABASE "{now}" RENAME TO "{back}"'
            code, tail = self._exec(
                f"{self.profile.postgres.psql} -X -q -d postgres -c {shlex.quote(sql)}"
            )
            return None if code == 0 else f"renaming {now} back failed (exit {code}): {tail}"

        return put

    def _compare_alembic(self, new: Snapshot) -> list[Violation]:
        if new.alembic is None or self.highest_rev is None:
            return []
        prod = self.profile.postgres.database
        if new.dbs is not None and self.prod_oid not in new.dbs:
            return []  # another production database now: the database rule judges it
        if new.dbs is not None and new.dbs.get(self.prod_oid or -1) != prod:
            return []
        self.chain.update(new.chain)
        now = new.alembic[0] if new.alembic else None
        steps = self._below(self.highest_rev, now)
        if steps is None or steps <= 1 or self.guards.approved_by:
            return []
        return [
            Violation(
                "alembic revision",
                "one-downgrade-step",
                f"{steps} steps below {self.highest_rev} (now {now or 'base'}) without approved_by",
                lambda: (
                    "a downgrade is not undone automatically: upgrade again "
                    f"(alembic upgrade {self.highest_rev}) after checking the data"
                ),
            )
        ]

    def _compare_wal(self, old: Snapshot, new: Snapshot) -> list[Violation]:
        out: list[Violation] = []
        if old.data_dir and new.data_dir is False:
            out.append(
                Violation(
                    f"data directory {self.profile.postgres.data_dir}",
                    "no-delete-active-wal",
                    "gone",
                    lambda: "a data directory cannot be put back: restore from backup",
                )
            )
        # judged by the REDO point read with the listing: while Postgres does not
        # answer (stopped, its shutdown checkpoint may recycle what was before the
        # new REDO) only the data directory is checked
        redo = new.redo
        if old.wal is None or new.wal is None or redo is None:
            return out
        gone = sorted(
            w for w in set(old.wal) - set(new.wal) if _SEGMENT.match(w) and w[8:] >= redo[8:]
        )
        if gone or (old.wal and not new.wal):
            out.append(
                Violation(
                    "active WAL",
                    "no-delete-active-wal",
                    f"{len(gone) or 'all'} segment(s) at or after the REDO point {redo} deleted"
                    + (f" ({', '.join(gone[:3])}{'...' if len(gone) > 3 else ''})" if gone else ""),
                    lambda: (
                        "deleted WAL cannot be put back: do not restart Postgres; "
                        "take a base backup or restore (scenario 3 / 5)"
                    ),
                )
            )
        return out

    # ------------------------------------------------------------ the end
    def summary(self) -> dict[str, Any] | None:
        """record.json's `tripwire` (None when it never armed)."""
        if not self.armed:
            return None
        return {
            "armed": True,
            "objects": self.objects(self.baseline) if self.baseline else [],
            "checks": self.checks,
            "cost_ms": {
                "median": round(statistics.median(self.costs_ms), 1),
                "max": round(max(self.costs_ms), 1),
            },
            "copies": self.copy_dir if self.copies else None,
            "tripped": None
            if self.tripped is None
            else {
                "command": self.tripped.command,
                "violations": self.tripped.violations,
                "put_back": self.tripped.restored,
                "not_put_back": self.tripped.not_restored,
            },
        }

    def discard(self) -> None:
        """Remove the copies (a run that tripped keeps them, as evidence)."""
        if self.copies and self.tripped is None:
            self._exec(f"rm -rf {shlex.quote(self.copy_dir)}")
            self.copies = {}


def _both(
    first: Callable[[], str | None] | None, second: Callable[[], str | None]
) -> Callable[[], str | None]:
    def put() -> str | None:
        why = first() if first is not None else None
        return why or second()

    return put


def parse(text: str, files: list[str]) -> Snapshot:
    """A `Snapshot` from the script's output lines (`key|value...`).

    >>> s = parse("file|0|12|5|600|0:0|" + "a" * 64 + "\\nalembic_read|yes\\n"
    ...           "db|16384|dealix\\nalembic|0003\\n", ["/x"])
    >>> s.files["/x"]["size"], s.dbs, s.alembic
    ('5', {16384: 'dealix'}, ['0003'])
    """
    snap = Snapshot(files={p: None for p in files})
    dbs: dict[int, str] = {}
    alembic: list[str] = []
    conn = alembic_read = False
    wal: list[str] = []
    wal_dir = False
    origin_ok = False
    origin: dict[str, str] = {}
    migs: dict[str, dict[str, str | None]] = {}
    for line in text.splitlines():
        key, _, rest = line.partition("|")
        parts = rest.split("|")
        if key == "file" and len(parts) >= 2:
            i = int(parts[0])
            if parts[1] != "missing" and len(parts) >= 6 and i < len(files):
                snap.files[files[i]] = {
                    "inode": parts[1],
                    "size": parts[2],
                    "mode": parts[3],
                    "owner": parts[4],
                    "sha256": parts[5],
                }
        elif key == "env":
            snap.env = rest
        elif key == "envx":
            snap.envx = rest
        elif key == "ref" and len(parts) == 2:
            snap.refs[parts[0]] = parts[1]
        elif key == "head":
            snap.head = rest
        elif key == "origin":
            origin_ok = rest == "ok"
        elif key == "oref" and len(parts) == 2:
            origin[parts[0]] = parts[1]
        elif key == "mainok":
            snap.main_on_origin = rest
        elif key == "ff":
            snap.origin_main_ff = rest
        elif key == "conn":
            conn = True
        elif key == "alembic_read":
            alembic_read = True
        elif key == "db" and len(parts) == 2:
            dbs[int(parts[0])] = parts[1]
            conn = True
        elif key == "redo" and rest:
            snap.redo = rest
        elif key == "alembic":
            alembic.append(rest)
        elif key == "datadir_exists":
            snap.data_dir = rest == "yes"
        elif key == "wal_dir":
            wal_dir = True
        elif key == "wal":
            wal.append(rest)
        elif key == "mig":
            fname, _, src = rest.partition(":")
            entry = migs.setdefault(fname, {})
            if m := _REV.match(src):
                entry["rev"] = m.group(1)
            elif m := _DOWN.match(src):
                entry["down"] = m.group(2)
    snap.dbs = dbs if conn and dbs else None
    snap.alembic = alembic if alembic_read else None
    snap.origin = origin if origin_ok else None
    snap.wal = wal if wal_dir else None
    snap.chain = {str(e["rev"]): e.get("down") for e in migs.values() if e.get("rev")}
    return snap


__all__ = ["Snapshot", "Tripped", "Tripwire", "parse"]
