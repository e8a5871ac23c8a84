"""Where a benchmark's result goes: a JSON file beside the printed table."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional


def write_json(result: Dict[str, Any], path: Optional[str]) -> None:
    """Writes ``result`` to ``path`` (parents created) and says so; nothing when ``path`` is None."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"wrote {path}")
