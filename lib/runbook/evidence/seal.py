"""Sealing and checking an evidence folder: secret scan, HTML, manifest, chain.

`runbook run` calls `seal(run_dir)` after record.json has its final outcome:

1. every text file in the folder is scanned for the environment's secrets
   (the profile's secrets file) and well-known token formats; a hit is
   masked in place and named in ``record["secret_scan"]`` (the notebook is
   evidence, but a leaked key in it would be a second incident);
2. the executed notebook is rendered to one self-contained HTML file with
   the inputs kept (an auditor must see what ran), papermill's injected
   parameters cell removed (the header shows the parameters), and a header
   built from record.json on top: verdict, step timeline, definition of done;
3. ``MANIFEST.sha256`` (``sha256sum`` format, so ``sha256sum -c`` works too)
   lists every file in the folder;
4. the manifest's own hash is chained: ``PREVIOUS`` in the folder names the
   previous sealed run's manifest hash, and ``<outputs>/CHAIN`` gets one line
   per run. Deleting a run, or a line of CHAIN, breaks the chain.

A notification names the folder before the manifest exists: `seal` hands
`before_manifest` the folder's *evidence digest* (what the manifest would hash
without ``PREVIOUS`` and the annexes, e.g. ``notifications.json``), the
runner sends the message with it and writes what happened to the annex, and
the manifest then covers the annex too. `evidence_digest_of_manifest` gets
the same digest back from the sealed manifest: `runbook verify` prints it.

`verify_run(run_dir)` and `verify_chain(outputs)` check both (`runbook verify`).

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "record.json").write_text("{}")
    >>> _ = write_manifest(d)
    >>> verify_run(d).ok
    True
    >>> _ = (d / "record.json").write_text('{"outcome": "ok"}')
    >>> verify_run(d).changed
    ['record.json']
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import html
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.clock import iso, utc_now
from runbook.core.paths import outputs_dir
from runbook.core.redact import Redactor
from runbook.evidence.record import read_record

MANIFEST = "MANIFEST.sha256"
PREVIOUS = "PREVIOUS"
CHAIN = "CHAIN"
# Written after sealing on purpose (drafts, not evidence): verify names them
# as unsealed but does not fail on them.
UNSEALED_DRAFTS = ("postmortem-draft.md",)
# Written after the evidence digest, before the manifest: sealed, but not part of
# the digest a notification names (the notification's own delivery log).
ANNEXES = ("notifications.json",)
GENESIS = "0" * 64


# ------------------------------------------------------------------ sealing
def seal(
    run_dir: Path,
    *,
    env: str | None = None,
    chain: bool = True,
    notebook: Path | None = None,
    server: bool = True,
    before_manifest: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Scan for secrets, render the HTML, write the manifest and chain it.

    The scan knows the operator's secrets and, when `server` is true, every
    secret-looking value of the server's env files, read again now over the
    profile's own connection (the session's in-memory registry died with the
    kernel; re-reading is the only way to know them without storing them).
    `notebook` is the executed notebook of a plain papermill run, which
    papermill wrote outside the run folder: it is copied in first.
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir) or {}
    env = env or record.get("environment") or "sandbox"
    redactor = secrets_redactor(env)
    server_env = (
        _server_env(redactor, env, record) if server else {"read": False, "why": "not asked"}
    )
    if notebook is not None:
        adopt_notebook(run_dir, Path(notebook), record)
    hits = scan_secrets(run_dir, redactor)
    notebook = _notebook_of(run_dir, record)
    html_path, html_why = None, None
    if notebook is None:
        html_why = (
            "no executed notebook in the run folder: plain papermill writes it where its "
            "OUTPUT argument says; seal with `runbook seal RUN_DIR --notebook OUTPUT`"
        )
    else:
        try:
            html_path = render_html(notebook, record)
            hits += scan_secrets(run_dir, redactor, only=[html_path])
        except Exception as exc:  # a broken notebook must not cost the manifest
            html_why = f"{notebook.name} could not be rendered: {type(exc).__name__}: {exc}"
            html_why = redactor.redact(html_why)[:500]
    if html_why:
        record.setdefault("warnings", []).append(f"HTML not rendered: {html_why}")
    if record:
        record["secret_scan"] = {
            "at": iso(utc_now()),
            "secrets_known": len(redactor.names),
            "masked": hits,
            "server_env": server_env,
        }
        record["html"] = html_path.name if html_path else None
        _write_json(run_dir / "record.json", redactor.redact_obj(record))
    if before_manifest is not None:
        # every evidence file is final now; the annex it writes is sealed below
        before_manifest(evidence_digest(run_dir))
    previous = None
    if chain:
        root = _outputs_root(run_dir)
        with _locked(root / f".{CHAIN}.lock"):
            previous = last_chain_entry(root)
            (run_dir / PREVIOUS).write_text(
                f"{previous['manifest'] if previous else GENESIS}  "
                f"{previous['run'] if previous else '-'}\n"
            )
            digest = write_manifest(run_dir)
            with (root / CHAIN).open("a") as fh:
                rel = run_dir.resolve().relative_to(root.resolve())
                fh.write(
                    f"{digest}  {rel}  {previous['manifest'] if previous else GENESIS}  "
                    f"{iso(utc_now())}\n"
                )
    else:
        digest = write_manifest(run_dir)
    return {
        "manifest": digest,
        "html": html_path,
        "html_why": html_why,
        "masked": hits,
        "previous": previous,
        "server_env": server_env,
    }


def _server_env(redactor: Redactor, env: str, record: dict[str, Any]) -> dict[str, Any]:
    """Register the server's env-file secrets for the scan; say what was read and what not."""
    from runbook.core.profile import load_profile
    from runbook.core.server_secrets import learn_for_seal

    try:
        profile = load_profile(env)
    except Exception as exc:
        return {"read": False, "why": f"profile {env!r}: {type(exc).__name__}: {exc}"[:500]}
    found = learn_for_seal(redactor, profile)
    # values the session masked that are gone from the server by now (rotated away
    # and no backup kept): the seal cannot look for them, and says so
    session_names = set(((record.get("server_secrets") or {}).get("names")) or [])
    found["not_rechecked"] = sorted(session_names - set(found.get("names") or []))
    return found


def adopt_notebook(run_dir: Path, notebook: Path, record: dict[str, Any]) -> Path:
    """Copy a plain papermill run's executed notebook into its run folder.

    Refuses a notebook that is not this run's: the session's verdict output
    names the run folder, and the scenario must match.
    """
    import shutil

    from runbook.errors import ParameterError

    if not notebook.is_file():
        raise ParameterError(f"--notebook {notebook}: no such file", key="notebook")
    text = notebook.read_text(encoding="utf-8", errors="replace")
    if not _notebook_matches(run_dir, text, record):
        raise ParameterError(
            f"{notebook} is not the notebook of {run_dir}: its outputs never name that run "
            "folder, and its papermill input and start time do not match the record's "
            f"scenario {record.get('scenario')!r} and start {record.get('started')}. Pass the "
            "OUTPUT notebook of the papermill run that wrote this folder.",
            key="notebook",
        )
    scenario = record.get("scenario") or notebook.stem
    target = run_dir / f"{scenario}.ipynb"
    if target.exists():
        raise ParameterError(f"{target} exists already; nothing copied", key="notebook")
    shutil.copyfile(notebook, target)
    return target


def secrets_redactor(env: str) -> Redactor:
    """A redactor that knows every secret in `env`'s secrets file."""
    from runbook.core.profile import load_profile
    from runbook.core.secrets import SecretStore

    redactor = Redactor()
    with contextlib.suppress(Exception):
        profile = load_profile(env)
        SecretStore(redactor, profile.secrets.file, source=profile.source)
        # secrets given as environment variables (the profile names them) count too
        for key, name in vars(profile.secrets).items():
            value = os.environ.get(name) if key != "file" and isinstance(name, str) else None
            if value:
                with contextlib.suppress(ValueError):  # too short to mask safely
                    redactor.register(name, value)
    return redactor


def scan_secrets(
    run_dir: Path, redactor: Redactor, *, only: list[Path] | None = None
) -> list[dict[str, Any]]:
    """Mask secrets in every text file under `run_dir`; returns what was masked where."""
    hits = []
    for path in only or _files(run_dir):
        if path.name in (MANIFEST, PREVIOUS):
            continue
        data = path.read_bytes()
        clean = redactor.redact_bytes(data)
        if clean != data:
            path.write_bytes(clean)
            hits.append(
                {
                    "file": str(path.relative_to(run_dir)),
                    "masks": clean.count(b"[redacted:") - data.count(b"[redacted:"),
                }
            )
    return hits


# --------------------------------------------------------------------- HTML
def render_html(notebook: Path, record: dict[str, Any]) -> Path:
    """`<notebook>.html`: self-contained, inputs kept, the record's summary on top."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    with _EXPORTER_LOCK:
        body, _ = _exporter().from_notebook_node(nb)
    body = _strip_remote_scripts(body)
    header = header_html(record, sorted(p.name for p in notebook.parent.iterdir()))
    marker = body.find(">", body.find("<body")) + 1
    body = body[:marker] + header + body[marker:]
    title = html.escape(f"{record.get('scenario', notebook.stem)} — {record.get('outcome', '?')}")
    body = body.replace(f"<title>{notebook.stem}</title>", f"<title>{title}</title>", 1)
    out = notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


_EXPORTER_LOCK = threading.Lock()


@functools.cache
def _exporter() -> Any:
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_cell_tags = {"injected-parameters"}
    config.HTMLExporter.embed_images = True
    exporter = HTMLExporter(config=config, template_name="lab")
    # no CDN scripts: the file must read the same offline, years from now
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    exporter.widget_renderer_url = ""
    return exporter


def prewarm() -> threading.Thread:
    """Load nbconvert and its templates in the background while the kernel works.

    The runner's process only waits for the kernel meanwhile; this takes the
    HTML's first-render cost (~0.3 s) off the end of every run.
    """

    def work() -> None:
        with contextlib.suppress(Exception), _EXPORTER_LOCK:
            import nbformat

            _exporter().from_notebook_node(nbformat.v4.new_notebook())

    thread = threading.Thread(target=work, name="nbconvert-prewarm", daemon=True)
    thread.start()
    return thread


def _strip_remote_scripts(body: str) -> str:
    import re

    return re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)


_COLORS = {
    "ok": "#1a7f37",
    "passed": "#1a7f37",
    "failed": "#cf222e",
    "not available": "#9a6700",
    "not started": "#9a6700",
    "refused": "#cf222e",
}


def header_html(record: dict[str, Any], files: list[str]) -> str:
    """The summary an auditor reads first: verdict, facts, timeline, DoD, files.

    >>> h = header_html({"scenario": "x", "outcome": "ok", "exit_code": 0,
    ...                  "steps": [], "checks": []}, ["record.json"])
    >>> "x: ok (exit 0)" in h
    True
    >>> "resumed from</th><td>1-x" in header_html({"scenario": "x", "resume": {"from": "1-x"}}, [])
    True
    """
    e = html.escape
    outcome = str(record.get("outcome", "unknown"))
    color = _COLORS.get(outcome, "#cf222e")
    facts = [
        ("scenario", record.get("scenario")),
        ("environment", record.get("environment")),
        ("dry run", record.get("dry_run")),
        ("operator", f"{record.get('operator')}@{record.get('operator_host')}"),
        ("runbook git SHA", record.get("runbook_sha")),
        ("started", record.get("started")),
        ("finished", record.get("finished")),
        ("duration", f"{(record.get('runner') or {}).get('duration_s')} s"),
        ("failed step", record.get("failed_step")),
        # the chain (runbook resume): the parent's own page cannot name its child,
        # its folder is sealed; `runbook history` shows resumed_by
        ("resumed from", (record.get("resume") or {}).get("from")),
        (
            "skipped (done in the parent)",
            ", ".join((record.get("resume") or {}).get("skipped_steps") or []),
        ),
        ("error", (record.get("error") or {}).get("type")),
        ("approved by", record.get("approved_by")),
        ("parameters", json.dumps(record.get("parameters", {}), default=str)),
    ]
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{e(k)}</th><td>{e(str(v))}</td></tr>"
        for k, v in facts
        if v not in (None, "", "None@None")
    )
    steps = record.get("steps") or []
    longest = max([s.get("duration_s") or 0 for s in steps] + [0.001])
    step_rows = "".join(
        "<tr>"
        f"<td>{e(str(s.get('name')))}</td><td>{e(str(s.get('started')))}</td>"
        f"<td style='text-align:right'>{e(_num(s.get('duration_s')))}</td>"
        f"<td style='color:{_COLORS.get(str(s.get('status')), '#cf222e')}'>"
        f"{e(str(s.get('status')))}</td>"
        f"<td><div style='background:#8c959f;height:0.8em;"
        f"width:{int(200 * (s.get('duration_s') or 0) / longest)}px'></div></td>"
        "</tr>"
        for s in steps
    )
    check_rows = "".join(
        "<tr>"
        f"<td>{e(str(c.get('name')))}</td><td>{e(str(c.get('expected')))}</td>"
        f"<td>{e(str(c.get('actual')))}</td>"
        f"<td style='color:{_COLORS.get(str(c.get('status')), 'inherit')};font-weight:bold'>"
        f"{e(str(c.get('status')))}</td><td>{e(str(c.get('note') or ''))}</td>"
        "</tr>"
        for c in record.get("checks") or []
    )
    metrics = record.get("metrics") or {}
    metric_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(_num(m.get('value')))} {e(str(m.get('unit') or ''))}</td>"
        f"<td>{e(_num(m.get('target')))}</td></tr>"
        for name, m in metrics.items()
    )
    table = "border-collapse:collapse;margin:0.5em 0 1em 0;font-size:0.9em"
    parts = [
        "<style>#runbook-summary td, #runbook-summary th {padding: 2px 10px 2px 0;"
        " vertical-align: top; text-align: left}</style>",
        "<section id='runbook-summary' style='font-family:sans-serif;margin:1em 2em;"
        "padding:1em;border:2px solid " + color + "'>",
        f"<h1 style='color:{color};margin-top:0'>{e(str(record.get('scenario')))}: "
        f"{e(outcome)} (exit {e(str(record.get('exit_code')))})</h1>",
        f"<table style='{table}'>{rows}</table>",
        *recap_html(record, table),
        "<h2>Step timeline</h2>",
        f"<table style='{table}'><tr><th>step</th><th>started (UTC)</th><th>seconds</th>"
        f"<th>status</th><th></th></tr>{step_rows}</table>"
        if step_rows
        else "<p>No step was recorded.</p>",
        "<h2>Definition of done</h2>",
        f"<table class='runbook-dod' style='{table}'><tr><th>check</th><th>expected</th>"
        f"<th>actual</th><th>status</th><th>note</th></tr>{check_rows}</table>"
        if check_rows
        else "<p>No check was recorded.</p>",
    ]
    if metric_rows:
        parts += [
            "<h2>Metrics</h2>",
            f"<table style='{table}'><tr><th>metric</th><th>value</th><th>target</th></tr>"
            f"{metric_rows}</table>",
        ]
    parts += [
        "<h2>Evidence files</h2><p>" + ", ".join(f"<code>{e(f)}</code>" for f in files) + "</p>",
        "<p style='font-size:0.8em'>The notebook as executed follows (inputs kept; papermill's "
        "injected-parameters cell is shown above as <i>parameters</i>). "
        f"<code>{MANIFEST}</code> in the folder lists the SHA-256 of every file: "
        "<code>runbook verify</code>.</p>",
        "</section>",
    ]
    return "\n".join(parts)


def recap_html(record: dict[str, Any], style: str = "") -> list[str]:
    """A fleet run's recap (host x step, then each host's checks), for the top of the page.

    Built from record.json's `hosts`; nothing for a run that never fanned out.

    >>> "<td>api2</td><td style='color:#cf222e;font-weight:bold'>failed</td>" in "".join(
    ...     recap_html({"hosts": {"api2": {"outcome": "failed", "steps": {"pull": "failed"},
    ...                                    "checks": {}}}}))
    True
    """
    hosts = record.get("hosts") or {}
    if not hosts:
        return []
    e = html.escape
    cols: dict[str, None] = {}
    for entry in hosts.values():
        for name in list(entry.get("steps") or {}) + list(entry.get("checks") or {}):
            cols.setdefault(name, None)

    def cell(value: str) -> str:
        shown = value.replace("_", " ")
        color = _COLORS.get(value, _COLORS.get(shown, "inherit"))
        return f"<td style='color:{color};font-weight:bold'>{e(shown)}</td>"

    head = "".join(f"<th>{e(c)}</th>" for c in ["host", "outcome", *cols])
    body = "".join(
        f"<tr><td>{e(h)}</td>"
        + cell(str(entry.get("outcome")))
        + "".join(
            cell(str({**(entry.get("steps") or {}), **(entry.get("checks") or {})}.get(c, "-")))
            for c in cols
        )
        + "</tr>"
        for h, entry in hosts.items()
    )
    return [
        "<h2>Recap: host x step</h2>",
        f"<table class='runbook-recap' style='{style}'><tr>{head}</tr>{body}</table>",
    ]


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


# ----------------------------------------------------------------- manifest
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(run_dir: Path) -> list[Path]:
    return sorted(
        p for p in run_dir.rglob("*") if p.is_file() and p.name not in (MANIFEST, MANIFEST + ".tmp")
    )


def current_hashes(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): sha256_file(p) for p in _files(run_dir)}


def write_manifest(run_dir: Path) -> str:
    """Write MANIFEST.sha256 over every file in `run_dir`; returns the manifest's own hash."""
    lines = "".join(f"{digest}  {name}\n" for name, digest in current_hashes(run_dir).items())
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(lines)
    os.replace(tmp, run_dir / MANIFEST)
    return hashlib.sha256(lines.encode()).hexdigest()


def _digest_lines(entries: dict[str, str]) -> str:
    return "".join(
        f"{digest}  {name}\n"
        for name, digest in entries.items()
        if name not in (PREVIOUS, *ANNEXES)
    )


def evidence_digest(run_dir: Path) -> str:
    """SHA-256 of the manifest the folder would have without PREVIOUS and the annexes.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "record.json").write_text("{}")
    >>> before = evidence_digest(d)
    >>> _ = (d / "notifications.json").write_text("[]")
    >>> _ = write_manifest(d)
    >>> evidence_digest_of_manifest(d) == before
    True
    """
    return hashlib.sha256(_digest_lines(current_hashes(run_dir)).encode()).hexdigest()


def evidence_digest_of_manifest(run_dir: Path) -> str:
    """The evidence digest, from the sealed manifest (what a notification named)."""
    return hashlib.sha256(_digest_lines(read_manifest(run_dir)).encode()).hexdigest()


def read_manifest(run_dir: Path) -> dict[str, str]:
    entries = {}
    for line in (run_dir / MANIFEST).read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        entries[name.removeprefix("*")] = digest
    return entries


@dataclass
class Verification:
    """What `runbook verify` found in one run folder."""

    run_dir: Path
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    missing_manifest: bool = False

    @property
    def ok(self) -> bool:
        return not (self.added or self.removed or self.changed or self.missing_manifest)

    def report(self) -> str:
        if self.missing_manifest:
            return f"NO MANIFEST  {self.run_dir} (never sealed: not evidence)"
        lines = [f"{'OK' if self.ok else 'TAMPERED'}  {self.run_dir}"]
        lines += [f"  changed:  {n}" for n in self.changed]
        lines += [f"  removed:  {n}" for n in self.removed]
        lines += [f"  added:    {n}" for n in self.added]
        lines += [f"  unsealed draft (not evidence): {n}" for n in self.drafts]
        return "\n".join(lines)


def verify_run(run_dir: Path) -> Verification:
    """Compare the folder with its manifest: added, removed and changed files."""
    run_dir = Path(run_dir)
    result = Verification(run_dir)
    if not (run_dir / MANIFEST).exists():
        result.missing_manifest = True
        return result
    sealed = read_manifest(run_dir)
    now = current_hashes(run_dir)
    result.changed = sorted(n for n in sealed.keys() & now.keys() if sealed[n] != now[n])
    result.removed = sorted(sealed.keys() - now.keys())
    extra = sorted(now.keys() - sealed.keys())
    result.drafts = [n for n in extra if n in UNSEALED_DRAFTS]
    result.added = [n for n in extra if n not in UNSEALED_DRAFTS]
    return result


# -------------------------------------------------------------------- chain
def _outputs_root(run_dir: Path) -> Path:
    """outputs/ for `outputs/<env>/<scenario>/<run>/`; the folder's grandparent's parent."""
    root = outputs_dir()
    with contextlib.suppress(ValueError):
        run_dir.resolve().relative_to(root.resolve())
        return root
    return run_dir.resolve().parents[2]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def chain_entries(root: Path) -> list[dict[str, str]]:
    path = Path(root) / CHAIN
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split("  ")
        if len(parts) >= 3:
            entries.append(
                {
                    "manifest": parts[0],
                    "run": parts[1],
                    "previous": parts[2],
                    "at": parts[3] if len(parts) > 3 else "",
                }
            )
    return entries


def last_chain_entry(root: Path) -> dict[str, str] | None:
    entries = chain_entries(root)
    return entries[-1] if entries else None


def manifest_digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / MANIFEST).read_bytes()).hexdigest()


def verify_chain(root: Path | None = None) -> list[str]:
    """Problems in `<outputs>/CHAIN` (empty when every sealed run is there, unedited, in order)."""
    root = Path(root) if root else outputs_dir()
    problems: list[str] = []
    entries = chain_entries(root)
    if not entries:
        return [f"no {CHAIN} file under {root}"]
    expected_previous = GENESIS
    for entry in entries:
        run_dir = root / entry["run"]
        if entry["previous"] != expected_previous:
            problems.append(
                f"{entry['run']}: chained to {entry['previous'][:12]}… but the entry before it "
                f"is {expected_previous[:12]}… (a line of {CHAIN} was removed or reordered)"
            )
        expected_previous = entry["manifest"]
        if not run_dir.is_dir():
            problems.append(f"{entry['run']}: run folder DELETED (sealed {entry['at']})")
            continue
        if not (run_dir / MANIFEST).exists():
            problems.append(f"{entry['run']}: {MANIFEST} deleted")
            continue
        if manifest_digest(run_dir) != entry["manifest"]:
            problems.append(f"{entry['run']}: {MANIFEST} changed since it was sealed")
        prev_file = run_dir / PREVIOUS
        if prev_file.exists():
            named = prev_file.read_text().split()[0]
            if named != entry["previous"]:
                problems.append(f"{entry['run']}: {PREVIOUS} does not match {CHAIN}")
        problems += [f"{entry['run']}: {line.strip()}" for line in _run_problems(run_dir)]
    chained = {e["run"] for e in entries}
    for manifest in sorted(root.glob(f"*/*/*/{MANIFEST}")):
        rel = str(manifest.parent.relative_to(root))
        if rel not in chained:
            problems.append(f"{rel}: sealed but not in {CHAIN}")
    return problems


def _run_problems(run_dir: Path) -> list[str]:
    v = verify_run(run_dir)
    if v.ok:
        return []
    return v.report().splitlines()[1:]


# ------------------------------------------------------------------ helpers
def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _notebook_matches(run_dir: Path, text: str, record: dict[str, Any]) -> bool:
    """The session's verdict names its run folder; a run that stopped earlier is
    matched by papermill's input path and run window against the record."""
    if str(run_dir.resolve()) in text or str(run_dir) in text:
        return True
    from datetime import datetime, timedelta

    try:
        meta = json.loads(text).get("metadata", {}).get("papermill", {})
        began = datetime.fromisoformat(str(meta["start_time"]).replace("Z", "+00:00"))
        opened = datetime.fromisoformat(str(record["started"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    if began.tzinfo is None:
        began = began.replace(tzinfo=opened.tzinfo)
    stem = Path(str(meta.get("input_path", ""))).stem
    # the session opens a second or so after papermill starts the kernel
    return stem == record.get("scenario") and began <= opened <= began + timedelta(minutes=5)


def _notebook_of(run_dir: Path, record: dict[str, Any]) -> Path | None:
    name = (record.get("runner") or {}).get("notebook")
    if name and (run_dir / name).exists():
        return run_dir / name
    found = sorted(run_dir.glob("*.ipynb"))
    return found[0] if found else None
