"""Content keys and seeds derived from names.

Every artifact is named by the sha256 of the canonical JSON of what it depends on; every random stream is
seeded from a hash of names, never from entropy, so a result does not depend on run order, batch size or
which worker computed it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def _plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1.0 and 1 mean the same setting and must give the same key
    return obj


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, pydantic models dumped to plain JSON: the same content, the same text."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def key_of(obj: Any) -> str:
    """The full sha256 hex digest of the canonical JSON of `obj`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from names, e.g. derive_seed(seed, "generator", key)."""
    return int(key_of(list(parts))[:16], 16) & ((1 << 63) - 1)
