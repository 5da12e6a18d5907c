"""Where a pretrained model lives and what it is, for keys and the plan, without torch or diffusers: a local
directory (keyed by a content fingerprint, never its path) or a Hugging Face hub id (keyed by id and revision).
Fetching and loading the model are study.sampling.pretrained's business.

    identity("CompVis/stable-diffusion-v1-4", None, where="generators.sd.pretrained.model")
    spec_identity(spec.pretrained, where="generators.sd.pretrained")    # what the generator stage keys on
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from study.grid import GridError, PretrainedSpec
from study.paths import default_cache_dir
from study.store import atomic_write_bytes, read_json

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SKIP_IN_FINGERPRINT = {".md", ".gitattributes", ".lock"}


class PretrainedError(GridError):
    """A pretrained model cannot be found or used: the message names the grid key, the path or id, and the fix."""


# --- where a model lives -------------------------------------------------------------------------------


def offline() -> bool:
    """HF_HUB_OFFLINE semantics, read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def local_dir(model: str, where: str) -> Path | None:
    """The directory `model` names, None for a hub id; a path-like string that does not exist is an error."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise PretrainedError(f"{where}: {model!r} is a file; expected a directory saved by diffusers/transformers")
    if model.startswith(("/", ".", "~")) or "\\" in model or not HUB_ID.match(model):
        raise PretrainedError(
            f"{where}: local path {model!r} does not exist ({path.resolve()}); expected a directory saved with "
            f"save_pretrained (or a Hugging Face hub id such as org/name)"
        )
    return None


def identity(model: str, revision: str | None, where: str) -> dict:
    """What a model *is*, for keys: a hub id with its revision, or a local directory's content fingerprint."""
    path = local_dir(model, where)
    if path is None:
        return {"hub": model, "revision": revision or "main"}
    return {"fingerprint": fingerprint(path), "name": path.name}


def spec_identity(spec: PretrainedSpec, where: str) -> dict:
    """The keyed identity of a pretrained arm's model: the model, its kind and class-unet options."""
    out = {"model": identity(spec.model, spec.revision, f"{where}.model"), "kind": spec.kind}
    if spec.class_index is not None:
        out["class_index"] = {str(k): v for k, v in sorted(spec.class_index.items(), key=str)}
    if spec.null_class is not None:
        out["null_class"] = spec.null_class
    return out


def sampling_identity(spec: PretrainedSpec, where: str) -> dict:
    """What changes a text-to-image sample set besides the sample spec: prompts, size and the CLIP filter."""
    out = {
        "prompt": spec.templates,
        "negative_prompt": spec.negative_prompt,
        "class_names": {str(k): v for k, v in sorted(spec.class_names.items(), key=str)},
        "size": spec.size,
    }
    if spec.filter is not None:
        f = spec.filter
        out["filter"] = {"model": identity(f.model, f.revision, f"{where}.filter.model"), "drop": f.drop}
    return out


def slug_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model)[:40]


def fingerprint(path: Path) -> str:
    """sha256 over (relative path, content sha256) of every file under `path` (hidden files and *.md left out).
    File hashes are memoised by (path, size, mtime) so a multi-GB checkpoint is read once."""
    memo_file = default_cache_dir() / "pretrained-fingerprints.json"
    memo = read_json(memo_file) or {}  # missing or damaged: hashed anew
    total, changed = hashlib.sha256(), False
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and p.suffix not in _SKIP_IN_FINGERPRINT
    )
    if not files:
        raise PretrainedError(f"pretrained model directory {path} holds no files")
    for file in files:
        stat = file.stat()
        memo_key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if memo_key not in memo:
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    digest.update(block)
            memo[memo_key], changed = digest.hexdigest(), True
        total.update(f"{file.relative_to(path).as_posix()}\0{memo[memo_key]}\n".encode())
    if changed:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo_file, json.dumps(memo, sort_keys=True).encode())
    return total.hexdigest()


def fingerprint_file(path: Path) -> str:
    """The sha256 of one file's content (e.g. FID Inception-v3 weights, keyed by content and never by path),
    memoised by (path, size, mtime) in the same memo as `fingerprint`."""
    memo_file = default_cache_dir() / "pretrained-fingerprints.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        memo = {}
    stat = path.stat()
    memo_key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if memo_key not in memo:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        memo[memo_key] = digest.hexdigest()
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo_file, json.dumps(memo, sort_keys=True).encode())
    return memo[memo_key]
