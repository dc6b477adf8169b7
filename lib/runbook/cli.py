"""The `runbook` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sandbox":
        from runbook.sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    print("usage: runbook sandbox ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
