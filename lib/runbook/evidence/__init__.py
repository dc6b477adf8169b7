"""Evidence tools (layer 6): run history, postmortem drafts, sealing and verifying run folders."""
