"""Placeholder until its issue lands: says what is missing and exits non-zero."""

from __future__ import annotations

import sys


def main() -> None:
    print("tdmi-bench: not implemented yet in this build", file=sys.stderr)
    sys.exit(3)
