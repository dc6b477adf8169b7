"""The rehearsal wing: the targets a runbook is rehearsed on, and their faults.

- `target.Target`: what a fault may do to a target (the sandbox, runbook.sandbox; the
  production twin, runbook.twin), and `RehearsalError`.
- `faults`: one registry of named, reversible faults, each written once.
- `state`: `fault` and `heal`, written once with the same meaning on both targets.

The sandbox and the twin keep only their own lifecycle (up, down, status) and the
few primitives of `Target`.
"""
