"""The command line: `python -m study.bench` subcommands and their --help, the console scripts beside
`python -m`, and the version written once."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import study
from study.bench import __main__ as bench

REPO = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib", reason="pyproject.toml is read with tomllib (Python >= 3.11)")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]


def test_bench_help_lists_the_benchmarks_without_importing_them():
    # A fresh interpreter: the benchmarks import torch; the list of them must not.
    code = "import sys; from study.bench.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
    code += "    print('exit', e.code, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[-1] == "exit 0 False", out.stderr
    for name in ("generator", "classifier", "runner"):
        assert f"    {name} " in out.stdout, out.stdout


def test_bench_subcommand_help_is_the_benchmarks_own(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["classifier", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m study.bench classifier")
    assert "--reference" in out and "--threads" in out


def test_bench_forwards_every_option_to_the_benchmark(monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "fake_bench", SimpleNamespace(main=lambda argv: seen.append(argv) or 0))
    monkeypatch.setitem(bench.BENCHMARKS, "runner", ("fake_bench", "a stand-in"))
    assert bench.main(["runner", "--jobs", "2", "--results", "out", "--help"]) == 0
    assert seen == [["--jobs", "2", "--results", "out", "--help"]]


def test_bench_without_or_with_an_unknown_benchmark_exits_2(capsys):
    for argv in ([], ["bogus"]):
        with pytest.raises(SystemExit) as exit_:
            bench.main(argv)
        assert exit_.value.code == 2
        assert "generator" in capsys.readouterr().err  # the usage names the choices


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_scripts_are_the_python_m_commands(script, capsys):
    module, _, function = SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module), function)
    python_m = {"study-run": "study.run", "study-report": "study.report", "study-equivalence": "study.equivalence",
                "study-bench": "study.bench", "study-advise": "study.advise"}[script]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {python_m}")


def test_the_version_is_written_once():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "study.__version__"}
    assert study.__version__.count(".") == 2
