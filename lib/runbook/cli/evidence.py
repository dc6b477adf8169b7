"""The evidence subcommands of `runbook`: verify, history, postmortem, seal.

`runbook postmortem RUN_DIR` writes the one drafter's text
(runbook.evidence.postmortem) with nothing added: the runbook's five lines
from the record (the human parts left as ``TODO``: a draft never pretends to
know the impact), the timeline, the definition-of-done table, and links to
every evidence file relative to the draft, which is written as
``postmortem-draft.md`` in the run folder (an unsealed draft: `runbook
verify` names it but does not count it as tampering).

Exit codes: 0 all good; 1 a difference or a broken chain was found (or no
record matched); 2 bad usage (no such folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runbook.errors import ParameterError
from runbook.evidence import seal as evidence_tools
from runbook.evidence.postmortem import draft
from runbook.evidence.record import read_record

DRAFT = "postmortem-draft.md"


def run_command(args: argparse.Namespace) -> int:
    return {
        "verify": verify,
        "history": history,
        "postmortem": postmortem,
        "seal": seal,
    }[args.command](args)


def _run_dir(text: str | None) -> Path | None:
    if not text:
        print("runbook: give a run folder", file=sys.stderr)
        return None
    path = Path(text)
    if not path.is_dir():
        print(f"runbook: no folder {path}", file=sys.stderr)
        return None
    return path


def verify(args: argparse.Namespace) -> int:
    if args.chain:
        root = Path(args.run_dir) if args.run_dir else None
        problems = evidence_tools.verify_chain(root)
        entries = evidence_tools.chain_entries(root or evidence_tools.outputs_dir())
        if problems:
            print(f"CHAIN BROKEN: {len(problems)} problem(s) in {len(entries)} sealed runs")
            for line in problems:
                print(f"  {line}")
            return 1
        abandoned = _abandoned(root or evidence_tools.outputs_dir(), entries)
        print(
            f"CHAIN OK: {len(entries)} sealed runs, every folder present and unchanged"
            + (
                f"; {len(abandoned)} abandoned (their process died without a verdict)"
                if abandoned
                else ""
            )
        )
        for run in abandoned:
            print(f"  abandoned: {run}")
        return 0
    path = _run_dir(args.run_dir)
    if path is None:
        return 2
    result = evidence_tools.verify_run(path)
    print(result.report())
    record = read_record(path) or {}
    if record.get("outcome") == "abandoned":
        info = record.get("abandoned") or {}
        last = (info.get("last_command") or {}).get("command")
        print(
            f"  outcome: abandoned ({info.get('why', 'its process died')}); last step "
            f"{info.get('last_step')!r}, last command {last!r}; found {info.get('detected_at')}"
        )
    if result.ok:
        print(f"  {len(evidence_tools.read_manifest(path))} files match {evidence_tools.MANIFEST}")
        # the digest a notification of this run named (runbook.core.notify)
        print(f"  evidence digest: sha256 {evidence_tools.evidence_digest_of_manifest(path)}")
    return 0 if result.ok else 1


def _abandoned(root: Path, entries: list[dict[str, str]]) -> list[str]:
    """The chained runs whose record says abandoned."""
    found = []
    for entry in entries:
        record = read_record(Path(root) / entry["run"]) or {}
        if record.get("outcome") == "abandoned":
            found.append(entry["run"])
    return found


def history(args: argparse.Namespace) -> int:
    from runbook.evidence import history as hist

    df = hist.load(
        Path(args.outputs) if args.outputs else None,
        scenario=args.scenario,
        env=args.env,
        since=args.since,
    )
    sys.stdout.write(hist.render(df, args.format).rstrip("\n") + "\n")
    if args.plot:
        path = hist.plot(df, Path(args.plot))
        print(f"plot: {path}", file=sys.stderr)
    return 0 if len(df) else 1


def postmortem(args: argparse.Namespace) -> int:
    path = _run_dir(args.run_dir)
    if path is None:
        return 2
    if not (path / "record.json").exists():
        print(f"runbook: no record.json in {path}", file=sys.stderr)
        return 2
    out, text = write_draft(path)
    sys.stdout.write(text)
    print(f"\n(draft written to {out})", file=sys.stderr)
    return 0


def write_draft(run_dir: Path) -> tuple[Path, str]:
    """Write `postmortem-draft.md` into the run folder; returns (path, text).

    Its own name, so it never overwrites a draft a scenario wrote during the
    run (restore_incident's `postmortem.md`), which the manifest seals.
    """
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "record.json").read_text())
    files = sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != DRAFT and not p.name.endswith(".tmp")
    )
    # the evidence files first, the bulky logs after them
    files.sort(key=lambda f: (f.startswith("logs/"), f))
    text = draft(record, files=files)
    path = run_dir / DRAFT
    path.write_text(text, encoding="utf-8")
    return path, text


def seal(args: argparse.Namespace) -> int:
    path = _run_dir(args.run_dir)
    if path is None:
        return 2
    if (path / evidence_tools.MANIFEST).exists():
        print(f"runbook: {path} is sealed already; `runbook verify` it", file=sys.stderr)
        return 1
    try:
        info = evidence_tools.seal(path, notebook=args.notebook)
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        return 2
    print(f"sealed {path}: manifest {info['manifest']}")
    if info["html"]:
        print(f"html:   {info['html']}")
    else:
        print(f"html:   not rendered: {info['html_why']}")
    server = info["server_env"]
    if server.get("read"):
        print(f"server env files scanned for: {', '.join(server['files']) or 'none found'}")
        if server.get("not_rechecked"):
            print(f"  no longer on the server, not rechecked: {', '.join(server['not_rechecked'])}")
    else:
        print(f"server env files not read: {server.get('why')}")
    return 0
