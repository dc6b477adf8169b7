"""record.json assembled from a session: the run's own parts and its gates' parts.

Written at every step end, metric, decision and verdict (`Session.write_record`);
the schema is docs/record.schema.json. The pieces other layers also write
(`Step`, `Change`, `error_dict`) are in runbook.evidence.record; the file is
written by runbook.evidence.writer. (Named apart from evidence.record: this
module assembles a whole record from a Session, which the evidence layer
below the session must not know.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.clock import iso, utc_now
from runbook.evidence.resume import parameters_hash
from runbook.evidence.writer import RECORD_SCHEMA

if TYPE_CHECKING:
    from runbook.session import Session


def assemble(s: Session) -> dict[str, Any]:
    """The machine-readable record of session `s` as it stands now."""
    finished = utc_now()
    gate = s.gate.record()
    return {
        "schema": RECORD_SCHEMA,
        "scenario": s.scenario,
        "environment": s.env,
        "environment_kind": s.profile.kind,
        "target": s.profile.target.host,
        "run_dir": str(s.run_dir),
        "operator": s.operator,
        "operator_host": s.operator_host,
        "process": s.process,
        "runbook_sha": s.runbook_sha,
        "parameters": s.parameters,
        "dry_run": s.dry_run,
        "started": iso(s.started),
        "updated": iso(finished),
        "duration_s": round(s.elapsed, 3),
        "outcome": s.outcome,
        "failed_step": s.failed_step,
        "error": s.error,
        "steps": [st.to_dict() for st in s.steps],
        "checks": [c.to_dict() for c in s.checks],
        "metrics": s.metrics,
        "decisions": s.decisions,
        "changes": [c.to_dict() for c in s.changes],
        "would_change": [c.to_dict() for c in s.would_change],
        "preview": s.preview,
        "next_command": s.next_command,
        "commands_run": s.commands_run,
        "approved_by": s.approved_by,
        "lock": gate["lock"],
        "tripwire": gate["tripwire"],
        "server_secrets": gate["server_secrets"],
        # the gate's logged-off probes (progress, heartbeat), counted per kind
        "polls": gate["polls"],
        # runs that died, finished as this one opened (Session.finish_abandoned_runs)
        "abandoned_runs": s.abandoned_runs,
        # for a resume (runbook.evidence.resume): secret-free, session-only names left out
        "parameters_sha256": parameters_hash(s.parameters),
        "resume": s.resume.to_record() if s.resume is not None else None,
        "target_facts": s.target_facts,
        # a run over many hosts (runbook.session.fleet): per host its outcome, each
        # step's and its checks; per step its batches. {} and [] for a run that never
        # fanned out
        "hosts": s.fleet_run.hosts_record(),
        "batches": s.fleet_run.recap.batches(),
        # every host lock this run took, by host, and the fleet's environment lock
        "locks": {g.name: g.lock.info() for g in s.gates.values() if g.lock is not None},
        "environment_lock": (
            None
            if s.environment_lock is None
            else {"host": s.gate.name, **s.environment_lock.info()}
        ),
    }
