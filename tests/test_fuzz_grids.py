"""Fuzzed grid files (issue 19): hypothesis mutates tests/tiny.yaml (wrong types, unknown keys at every level,
missing keys, empty lists, huge, negative and non-finite numbers, unicode, duplicate keys, broken YAML) and
every mutation must either plan and pass the pre-flight (`--dry-run`, exit 0) or exit 2 with a one-line message
naming the key. Never a traceback, never exit 1 on input alone. The examples are bounded and derandomized, so
the suite runs the same grids every time. Valid mutations are checked up to the pre-flight (the real run's
input checks); training each of them is beyond the suite's budget.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.runner import cli

TINY_TEXT = (Path(__file__).resolve().parent / "tiny.yaml").read_text()
TINY = yaml.safe_load(TINY_TEXT)

ODD_VALUES = [None, True, -1, 0, 10**12, -(10**12), 1e308, -0.5, math.inf, math.nan, "", "ünïcødé ✓ 🚀", "x" * 300,
              [], {}, [1, "a"], {"a": 1}, "5", "-1"]  # fmt: skip
UNICODE_KEYS = ["ключ", "鍵", "clé", "key with space", "🚀"]


def paths(obj, prefix=()) -> list[tuple]:
    """Every path (tuple of keys and list indices) to a node of the grid, the root excluded."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((*prefix, i))
            out.extend(paths(v, (*prefix, i)))
    return out


def dict_paths(obj, prefix=()) -> list[tuple]:
    """Paths to every mapping, the root included (where unknown keys can be added)."""
    out = [prefix] if isinstance(obj, dict) else []
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in children:
        out.extend(dict_paths(v, (*prefix, k)))
    return out


def get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def copy(obj):
    return yaml.safe_load(yaml.safe_dump(obj, allow_unicode=True))


def key_name(path: tuple) -> str:
    """The innermost mapping key on `path` (a list index names its list's key)."""
    return next(str(p) for p in reversed(path) if isinstance(p, str))


@st.composite
def mutations(draw) -> tuple[str, str, str, str | None]:
    """(kind, what was done, grid text, the key an error must name or None when any message will do)."""
    kind = draw(st.sampled_from(["replace", "add", "delete", "empty", "unicode_key", "duplicate", "bad_yaml"]))
    grid = copy(TINY)
    all_paths = paths(grid)
    if kind == "replace":
        path = draw(st.sampled_from(all_paths))
        value = draw(st.sampled_from(ODD_VALUES))
        get(grid, path[:-1])[path[-1]] = value
        return kind, f"{'.'.join(map(str, path))} = {value!r}", yaml.safe_dump(grid, allow_unicode=True), key_name(path)
    if kind in ("add", "unicode_key"):
        where = draw(st.sampled_from(dict_paths(grid)))
        key = draw(st.sampled_from(UNICODE_KEYS)) if kind == "unicode_key" else "bogus_setting"
        get(grid, where)[key] = draw(st.sampled_from([1, "x", [1], {"a": 1}]))
        return kind, f"{'.'.join(map(str, where))}.{key} added", yaml.safe_dump(grid, allow_unicode=True), key
    if kind == "delete":
        path = draw(st.sampled_from([p for p in all_paths if isinstance(p[-1], str)]))
        del get(grid, path[:-1])[path[-1]]
        return kind, f"{'.'.join(map(str, path))} deleted", yaml.safe_dump(grid, allow_unicode=True), None
    if kind == "empty":
        lists = [p for p in all_paths if isinstance(get(grid, p), list)]
        path = draw(st.sampled_from(lists))
        get(grid, path[:-1])[path[-1]] = []
        return kind, f"{'.'.join(map(str, path))} = []", yaml.safe_dump(grid, allow_unicode=True), None
    lines = [line for line in TINY_TEXT.splitlines() if line and not line.startswith("#")]
    if kind == "duplicate":
        i = draw(st.integers(0, len(lines) - 1))
        text = "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]) + "\n"
        return kind, f"line {i} duplicated", text, None
    text = "\n".join(lines)
    cut = draw(st.integers(1, len(text) - 1))
    junk = draw(st.sampled_from(["", ":", "\t", "{", "[", "- ", '"', "\x00", "ü: ü: ü"]))
    return kind, f"cut at {cut} + {junk!r}", text[:cut] + junk + text[cut + len(junk) :], None


def check_mutation(mutation, tmp_path: Path) -> str:
    """The property for one mutated grid; returns its outcome ("<kind> exit <code>")."""
    kind, what, text, key = mutation
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(text.encode("utf-8", "surrogatepass"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(grid), "--results", str(tmp_path / "results"), "--dry-run", "--quiet"])
        except SystemExit as exc:  # argparse only; the grid is never an argparse error
            pytest.fail(f"{what}: SystemExit {exc.code}\n{err.getvalue()}")
        except Exception as exc:  # noqa: BLE001 - the property: no mutation may end in a traceback
            pytest.fail(f"{what}: {type(exc).__name__}: {exc}")
    message = err.getvalue()
    assert code in (0, 2), f"{what}: exit {code}\n{message}"
    assert "Traceback" not in message, f"{what}\n{message}"
    if code == 2:
        assert message.startswith("error: "), f"{what}\n{message}"
        if key is not None:
            assert key in message, f"{what}: the message does not name {key!r}\n{message}"
    else:
        assert "pre-flight: inputs checked" in out.getvalue(), what
    return f"{kind} exit {code}"


def test_a_mutated_grid_plans_or_exits_2_naming_the_key(tmp_path):
    """The property over 120 derandomized mutations, then that they were not degenerate: some grids stay valid
    (plan and pre-flight), others are rejected. One test, so the count never depends on which tests ran
    before it. The examples share `tmp_path` (one decode cache), as a user's results directory would."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              database=None)  # fmt: skip
    @given(mutation=mutations())
    def every_mutation(mutation):
        outcomes[check_mutation(mutation, tmp_path)] += 1

    every_mutation()
    print(f"fuzzed grids: {dict(outcomes)}")
    assert sum(outcomes.values()) >= 120, outcomes  # hypothesis ran every example (more when it shrinks)
    assert {k.split()[-1] for k in outcomes} == {"0", "2"}, outcomes
