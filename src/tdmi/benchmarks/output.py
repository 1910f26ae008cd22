"""How the stand-alone benchmark scripts hand over their result: JSON on stdout, and a file if asked.

Light (the cold-start benchmark runs it in a slim venv): the standard library and :mod:`tdmi.utils`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tdmi.utils import write_text_atomic


def emit_json(result: Any, path: Path | None) -> None:
    """Print ``result`` as indented JSON and, with ``path``, write the same text there atomically."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        write_text_atomic(path, text + "\n")
