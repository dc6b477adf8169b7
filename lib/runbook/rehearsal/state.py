"""`fault` and `heal`, written once for the sandbox and the twin.

- `fault(target, spec)`: the canonical name (`llm-down:anthropic`), refused when
  the fault is not for this target; a no-op when already active; a fault whose
  apply fails half-way is healed at once and not recorded (only a fault whose apply
  returned is in state.json's `faults`).
- `heal(target)`: every active fault, newest first, each removed from the list
  once healed; errors are collected (one failed heal does not leave the others
  broken) and raised together at the end; then `settle`: deep health all green and
  the DLQs drained, so one drill's leftovers never reach the next drill's signals.

Example (tests/test_sandbox.py and tests/test_twin_*.py run this for real)::

    sb.fault("postgres-down")    # 'postgres-down applied'
    sb.fault("postgres-down")    # 'postgres-down is already active'
    sb.heal()                    # ['postgres-down']
"""

from __future__ import annotations

import contextlib
import time

import runbook.rehearsal.faults  # noqa: F401 - the fault modules register on import
from runbook.rehearsal.faults.registry import canonical, parse
from runbook.rehearsal.target import RehearsalError, Target

DLQS = {"webhooks": "WEBHOOKS_DLQ", "outbound": "OUTBOUND_DLQ", "enrichment": "ENRICHMENT_DLQ"}
SETTLE_TIMEOUT = 60.0


def fault(target: Target, spec: str) -> str:
    """Apply a fault by name; a no-op (with a message) when it is already active."""
    spec = canonical(spec, target.kind)
    f, param = parse(spec, target.kind)
    with target.locked():
        target.ensure_up()
        if spec in target.state.get("faults", []):
            return f"{spec} is already active"
        try:
            said = f.apply(target, param)
        except BaseException as exc:
            # heal what the apply did before it failed, then say why it failed
            try:
                f.heal(target, param)
            except Exception as heal_exc:
                exc.add_note(f"and healing the half-applied {spec} failed too: {heal_exc}")
            raise
        target.update_state(faults=[*target.state.get("faults", []), spec])
    return f"{spec} applied" + (f": {said}" if said else "")


def heal(target: Target, *, lock: bool = True) -> list[str]:
    """Undo every active fault, newest first, then settle; returns what was healed.
    `lock=False` for a caller that holds the target's lock already (the sandbox's `up`)."""
    with target.locked() if lock else contextlib.nullcontext():
        healed: list[str] = []
        errors: list[str] = []
        for spec in reversed(target.state.get("faults", [])):
            try:
                f, param = parse(spec)
                f.heal(target, param)
            except Exception as exc:
                errors.append(f"{spec}: {exc}")
                continue
            healed.append(spec)
            # read afresh: a heal may record in the state itself (deploy forgets its push)
            target.update_state(faults=[x for x in target.state.get("faults", []) if x != spec])
        if errors:
            raise RehearsalError("heal", "could not heal " + "; ".join(errors))
        if healed:
            settle(target)
            target.after_heal()
        return healed


def settle(target: Target, timeout: float = SETTLE_TIMEOUT) -> None:
    """Back to the baseline after a heal: deep health all green and the DLQs empty.

    Work the background workload could not do during the fault waits in the DLQs;
    replaying it (the admin drain, as the runbook does) keeps one drill's leftovers
    out of the next one's signals.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            status, body = target.api("/health/deep", timeout=5)
            if status == 200:
                break
            last = f"{status} {str(body)[:200]}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RehearsalError("heal", f"/health/deep is not all green (last: {last})")
        time.sleep(0.5)
    while True:
        queues = dlq_depths(target)
        if not any(queues.values()):
            return
        if time.monotonic() > deadline:
            raise RehearsalError("heal", f"DLQs still hold items after draining: {queues}")
        for name, queue in DLQS.items():
            if queues.get(queue):
                target.api(
                    f"/api/v1/admin/dlq/{name}/drain?limit=1000",
                    method="POST",
                    admin=True,
                    timeout=60,
                )
        time.sleep(0.2)


def dlq_depths(target: Target) -> dict[str, int]:
    status, body = target.api("/api/v1/admin/dlq/stats", admin=True, timeout=5)
    if status != 200 or not isinstance(body, dict):
        raise RehearsalError("dealix-api", f"/api/v1/admin/dlq/stats answered {status}")
    return {k: int(v) for k, v in body["queues"].items()}
