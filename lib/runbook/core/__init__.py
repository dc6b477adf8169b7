"""Core plumbing (layer 1): paths, the redactor, transports, output capture, the evidence writer,
profiles, secrets and the catalog of notebooks. Imports only the vocabulary (errors, result, checks, clock)."""
