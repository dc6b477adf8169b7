"""Evidence (a layer above core, below safety): the run records, apart from the plumbing.

- writer: the run folder as a run writes it (commands.jsonl, logs, record.json);
- record: the parts of record.json other layers write too (Step, Change, error_dict);
  the session assembles the whole record (runbook.session.assembly);
- seal: the manifest, the chain, `runbook verify`; liveness: runs whose process died;
- story: the run told in plain lines; postmortem: the one drafter;
- history: the one reader of many runs (`runbook history`, and the review scenario's
  `history.load`).

The command line over them is runbook.cli.evidence (verify, history, postmortem, seal).
"""
