"""Reading a JSON document that must be an object: catalogs, image manifests, configs."""

from __future__ import annotations

import json
from typing import Any


def load_object(data: str | bytes) -> dict[str, Any]:
    """The JSON object in *data*; ValueError("is not JSON: ...") or ValueError("is not a
    JSON object"), worded to follow the name of what was read."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise ValueError("is not a JSON object")
    return document
