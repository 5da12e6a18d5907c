"""Reading grid files: strict YAML (duplicate keys refused), `${VAR}` expansion, the `--smoke` merge, and
validation against study.grid.schema with errors that name the file, the key path and what was expected.

    grid = load_grid("grids/quickstart.yaml", smoke=False)
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from study.grid.schema import DATASET_SPECS, Grid, GridError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    # Check the keys written in this mapping before `<<: *anchor` merges are flattened in: a merged key
    # that an explicit key overrides is the point of merging, a key written twice is a mistake.
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line}, first on line {seen[key]})", key_node.start_mark
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(value: str, where: str) -> str:
    """Expand `${VAR}`, `${VAR:-default}` and a leading `~`; an unset variable without default is an error."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise GridError(f"{where}: environment variable ${{{name}}} is not set (set it or write ${{{name}:-default}})")

    return os.path.expanduser(_VAR.sub(sub, value))


def _expand_tree(node: Any, path: str, file: str) -> Any:
    if isinstance(node, dict):
        return {k: _expand_tree(v, f"{path}.{k}" if path else str(k), file) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, f"{path}[{i}]", file) for i, v in enumerate(node)]
    if isinstance(node, str):
        return expand_vars(node, f"{file}: {path}")
    return node


def deep_merge(base: dict, override: dict, path: str = "") -> dict:
    """Recursively merge `override` into a copy of `base`; the key `*` under `generators` applies to every arm."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else str(key)
        if path == "generators" and key == "*":
            for arm in out:
                out[arm] = deep_merge(out[arm], value, f"generators.{arm}") if isinstance(value, dict) else value
            continue
        if path == "generators" and key not in out:
            raise GridError(f"smoke.{where}: no such arm in `generators` (arms: {sorted(out)})")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, where)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe(error: dict) -> str:
    loc = ""
    for part in error["loc"]:
        if isinstance(part, int):
            loc += f"[{part}]"
        elif not _is_union_tag(part):
            loc += f".{part}" if loc else str(part)
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if error["type"] == "missing":
        return f"{loc}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f", got {got!r}"
    return f"{loc or '(top level)'}: {msg}{shown}"


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the chosen union member (e.g. 'digits', 'FractionMix', 'list[int]') into error paths.
    return isinstance(part, str) and (part in DATASET_SPECS or part[:1].isupper() or "[" in part)


def validate_grid(raw: Any, file: str = "<grid>") -> Grid:
    if not isinstance(raw, dict):
        raise GridError(f"{file}: expected a mapping of grid keys at the top level, got {type(raw).__name__}")
    raw = _expand_tree(raw, "", file)
    ds = raw.get("dataset")
    if isinstance(ds, dict) and ds.get("name") not in DATASET_SPECS:
        raise GridError(
            f"{file}: dataset.name: unknown dataset {ds.get('name')!r}; expected one of {sorted(DATASET_SPECS)}"
        )
    try:
        return Grid.model_validate(raw)
    except ValidationError as exc:
        lines = sorted({_describe(e) for e in exc.errors()})
        raise GridError(f"{file}: invalid grid\n  " + "\n  ".join(lines)) from None


def load_grid(path: str | os.PathLike, smoke: bool = False) -> Grid:
    """Read, expand and validate a grid file; with `smoke`, deep-merge its `smoke:` block first."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise GridError(f"{file}: grid file not found") from None
    except OSError as exc:
        raise GridError(f"{file}: cannot read grid file ({exc.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise GridError(f"{file}: not valid YAML: {exc}") from None
    if smoke:
        if not isinstance(raw, dict) or not raw.get("smoke"):
            raise GridError(f"{file}: --smoke given but the grid has no `smoke:` block")
        if not isinstance(raw["smoke"], dict):
            raise GridError(f"{file}: smoke: expected a mapping of overrides")
        raw = deep_merge(raw, raw["smoke"])
    return validate_grid(raw, file)
