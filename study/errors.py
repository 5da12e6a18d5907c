"""The errors a user can fix: bad input named in the message (the file, the grid key, the value and what was
expected), as opposed to a bug in study. The runner reports a `StudyInputError` in one line and exits 2;
anything else (a plain ValueError or RuntimeError from a bug) is not caught as bad input: it fails the cell
it happens in (exit 1, traceback in the artifact's error.txt) or ends the run with a traceback.

    StudyInputError
    ├── GridError            study.grid: the grid file (schema, YAML, keys)
    │   ├── OpenSetError     study.data.sources: another dataset as a generator's training source
    │   └── PretrainedError  study.hub: a pretrained model that cannot be found or used
    ├── DatasetError         study.data.datasets: a dataset that cannot be loaded, or subsets that do not fit
    ├── ModelSpecError       study.models: classifier or generator settings that cannot build a model
    ├── DeviceError          a device that was asked for and does not exist on this machine
    ├── BackendError         study.runner.execute: a Dask/Ray backend that cannot start
    └── BadInput             study.runner.preflight: command-line options, or pre-flight checks

Errors about a value also derive from ValueError (and so stay catchable as one); a missing device, an
unreachable cluster and the runner's BadInput (which may wrap either) do not. Torch-free.
"""

from __future__ import annotations


class StudyInputError(Exception):
    """Bad input the user can fix; the message names where it is and what was expected."""


class ModelSpecError(StudyInputError, ValueError):
    """Model settings (classifier or generator keys of the grid) that cannot build a working model."""


class DeviceError(StudyInputError):
    """A device was asked for (grid `device:` or `--device`) that this machine does not have."""


class BackendError(StudyInputError):
    """The workers' backend cannot start: its extra is not installed, or the scheduler is unreachable."""
