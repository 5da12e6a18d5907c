"""Artifact store: one directory per content key, atomic writes, a done marker written last, file locks, and
the name of every file an artifact holds.

    results/store/<stage>/<slug>__<hash12>/
        config.json       what the artifact was computed from (its key is the sha256 of this, canonical)
        ...               the artifact's own files, each written atomically (temp file + os.replace)
        provenance.json   git commit and dirty flag, package versions, device, host, seconds (wall) and
                          cpu_seconds (process CPU time of the build)
        done.json         written last: the artifact exists only once this file does; it lists every other
                          file with its size and BLAKE2b checksum, verified before the artifact is used

    store.find("samples", key)      # the directory of a sample set by its key (any slug), or None

A directory without `done.json` is work in progress (or the remains of a killed run); builders may resume
from what it holds (the generator keeps training checkpoints there). A failure writes `error.txt` and never
`done.json`, so failures are retried, never cached. `Store.lock` makes sure two processes never build the
same artifact: the second waits, then finds it done.

The artifacts' own files (below) are named here and nowhere else. The names are on disk in every existing
store: renaming one orphans those caches.

    stage        file                    written by                  holds
    reference,   metrics.json            study.runner.stages         test metrics, training stats, class count
    classifier                                                       (cells: also the real and synthetic counts)
                 classifier.json,        study.models.classifier     the spec and weights that rebuild the model
                 classifier.safetensors                              (the reference and real-only classifiers)
    generator    generator.json          study.models.generator      written last: the saved model is complete
                 unet/, scheduler/       study.models.generator      diffusers save_pretrained directories
                 checkpoint.pt           study.models.generator      training state while training; then deleted
                 train_stats.json        study.runner.stages,        what the generator saw, how it trained
                                         study.sampling.pretrained
                 pretrained.json         study.sampling.pretrained   a pretrained model: what it resolved to
    samples      samples.safetensors     study.sampling.sample_set   images, labels, seeds, layout
                 samples.json            study.sampling.sample_set   the sample spec, seed root, diagnostics
                 preview.png             study.sampling.sample_set   one row of images per class or pair
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from study.keys import canonical_json, key_of

DONE, CONFIG, PROVENANCE, ERROR = "done.json", "config.json", "provenance.json", "error.txt"
INVALIDATED = "invalidated.txt"  # why a finished artifact was found damaged and emptied (until it is rebuilt)
METRICS = "metrics.json"
CLASSIFIER_META, CLASSIFIER_WEIGHTS = "classifier.json", "classifier.safetensors"
GENERATOR_META, GENERATOR_CHECKPOINT = "generator.json", "checkpoint.pt"
UNET_DIR, SCHEDULER_DIR = "unet", "scheduler"
TRAIN_STATS, PRETRAINED_META = "train_stats.json", "pretrained.json"
SAMPLES, SAMPLES_META, PREVIEW = "samples.safetensors", "samples.json", "preview.png"
DIAGNOSTICS, NEAREST = "diagnostics.json", "nearest.png"  # the diagnostics stage (study.sampling.diagnostics)
# Beside cells.csv in results/<name>/ (study.runner.collect writes it, study.report reads it): every face cell's
# ROC, long (cell, far, tar: TAR at log-spaced FARs from the protocol's resolution to 1).
ROC_CURVES = "roc.csv"
KEY_CHARS = 12  # hex digits of the key in a directory name
LOCK = ".lock"
CHECKSUM = "blake2b"  # hashlib name of the checksum in done.json
# Files that are not part of an artifact's content: the markers around it (done.json lists the others).
_NOT_CONTENT = {DONE, ERROR, LOCK}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing an artifact's file; the message names the file and the
    filesystem it is on, with the space left there."""


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    while path != path.parent and path.parent.stat().st_dev == path.stat().st_dev:
        path = path.parent
    return path


def disk_full_error(path: str | os.PathLike, exc: BaseException) -> DiskFullError:
    """`exc` re-raised as the full disk it was, with the file that could not be written and the disk it is on."""
    path = Path(path)
    mount = _mount_point(path.parent)
    try:
        free = f"{shutil.disk_usage(mount).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    code = exc.errno if isinstance(exc, OSError) and exc.errno in _DISK_FULL else errno.ENOSPC
    what = "disk full" if code == errno.ENOSPC else "disk quota exceeded"
    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"[:200]
    return DiskFullError(code, f"{what} writing {path} (filesystem {mount}, {free}): {cause}")


def no_space_left(directory: str | os.PathLike, probe_bytes: int = 1 << 16) -> bool:
    """Whether the filesystem of `directory` refuses `probe_bytes` more. Writers such as torch.save and
    safetensors report a full disk as their own RuntimeError, so a failed write asks the disk directly."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".study-probe.") as f:
            f.write(b"\0" * probe_bytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno in _DISK_FULL
    return False


def as_disk_full(path: str | os.PathLike, exc: BaseException) -> BaseException:
    """The error to raise for a failed write of `path`: a DiskFullError when the disk is full (ENOSPC/EDQUOT,
    or any writer's error while no space is left), else `exc` itself. Call it before deleting the partial
    file, so the disk is still as full as the writer found it."""
    if isinstance(exc, DiskFullError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return disk_full_error(path, exc)
    return disk_full_error(path, exc) if no_space_left(Path(path).parent) else exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        error = as_disk_full(path, exc)
        if error is exc:
            raise
        raise error from exc
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600 files; results should read like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        error = as_disk_full(path, exc)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if error is not exc:
            raise error from exc
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike, error: type[Exception] | None = None) -> Any:
    """The JSON in `path`, or None when the file does not exist. Invalid JSON raises `error` naming the file,
    or gives None when `error` is None (a reader that treats a damaged file as absent)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        if error is None:
            return None
        raise error(f"{path}: not valid JSON ({exc})") from None


def read_artifact_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON file a loader needs from a finished artifact; FileNotFoundError naming the file and `what`
    the directory should hold when it is missing."""
    data = read_json(path, ValueError)
    if data is None:
        raise FileNotFoundError(f"{path} not found: {Path(path).parent} holds no saved {what}")
    return data


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a filename (torch.save, safetensors, savefig): yield a temp path in the same
    directory and rename it over `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as exc:
        error = as_disk_full(path, exc)
        if error is exc:
            raise
        raise error from exc
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except Exception as exc:  # the writer's own error (torch.save, safetensors) or the rename's
        error = as_disk_full(path, exc)
        if error is not exc:
            raise error from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass(frozen=True)
class Artifact:
    """A stage's output, named by its content: `config` is everything the stage reads (parents by key)."""

    stage: str  # generator | samples | classifier | ...
    slug: str  # readable prefix, e.g. gen-closed-base20-s0
    config: dict

    @property
    def key(self) -> str:
        return key_of(self.config)

    @property
    def dirname(self) -> str:
        return f"{self.slug}__{self.key[:KEY_CHARS]}"


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, art: Artifact) -> Path:
        return self.root / art.stage / art.dirname

    def find(self, stage: str, key: str) -> Path | None:
        """The directory of the artifact with this key in `stage`, whatever its slug; None if there is none.
        A finished directory wins over an unfinished one (a slug renamed between versions leaves two)."""
        matches = sorted((self.root / stage).glob(f"*__{key[:KEY_CHARS]}"))
        done = [d for d in matches if (d / DONE).exists()]
        return (done or matches or [None])[0]

    def is_done(self, art: Artifact) -> bool:
        return (self.path(art) / DONE).exists()

    def verify(self, art: Artifact | Path, names: tuple[str, ...] | None = None) -> str | None:
        """None when the finished artifact's files (or only `names` among them) match done.json's sizes and
        checksums; else what is wrong, naming the file. An artifact finished before checksums were recorded
        passes (nothing to check against)."""
        return verify_dir(self.path(art) if isinstance(art, Artifact) else Path(art), names)

    def invalidate(self, art: Artifact | Path, reason: str) -> None:
        """Forget a finished artifact that failed verification and empty its directory (keeping config.json
        and the lock), so the next build starts from scratch rather than resuming from damaged files."""
        d = self.path(art) if isinstance(art, Artifact) else Path(art)
        with FileLock(str(d / LOCK)):
            with contextlib.suppress(FileNotFoundError):
                (d / DONE).unlink()  # first: from here on the artifact is not done, whatever else happens
            for child in d.iterdir():
                if child.name in (CONFIG, LOCK):
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                atomic_write_text(d / INVALIDATED, reason + "\n")

    def done_info(self, art: Artifact) -> dict:
        return json.loads((self.path(art) / DONE).read_text())

    @contextlib.contextmanager
    def lock(self, art: Artifact, timeout: float = -1) -> Iterator[Path]:
        """Hold the artifact's lock (blocking by default) and yield its directory, created with config.json."""
        d = self.path(art)
        d.mkdir(parents=True, exist_ok=True)
        with FileLock(str(d / LOCK), timeout=timeout):
            if not (d / CONFIG).exists():
                atomic_write_text(d / CONFIG, json.dumps(json.loads(canonical_json(art.config)), indent=2) + "\n")
            yield d

    def mark_done(
        self, art: Artifact, seconds: float, device: str = "cpu", cpu_seconds: float | None = None, **extra: Any
    ) -> None:
        """Write provenance, clear a stale error, then `done.json` last, with every file's size and checksum.
        `seconds` is the build's wall time; `cpu_seconds` its process CPU time (every thread), when measured."""
        d = self.path(art)
        cpu = {} if cpu_seconds is None else {"cpu_seconds": round(cpu_seconds, 3)}
        atomic_write_json(d / PROVENANCE, provenance(seconds=seconds, device=device, **cpu, **extra))
        for stale in (ERROR, INVALIDATED):
            with contextlib.suppress(FileNotFoundError):
                (d / stale).unlink()
        files = {rel: {"bytes": f.stat().st_size, CHECKSUM: file_digest(f)} for rel, f in content_files(d)}
        atomic_write_json(
            d / DONE,
            {
                "key": art.key,
                "stage": art.stage,
                "seconds": round(seconds, 3),
                **cpu,
                "finished": _now(),
                "files": files,
            },
        )

    def clear_done(self, art: Artifact) -> None:
        """Forget that `art` is done (for --force); its files stay until the rebuild replaces them."""
        with contextlib.suppress(FileNotFoundError):
            (self.path(art) / DONE).unlink()

    def mark_failed(self, art: Artifact, traceback_text: str) -> None:
        with contextlib.suppress(OSError):  # on a full disk the error cannot be recorded: the caller reports it
            atomic_write_text(self.path(art) / ERROR, traceback_text)

    def ensure(self, art: Artifact, build: Callable[[Path], dict | None], device: str = "cpu") -> bool:
        """Build `art` unless it is done; True if this call built it. `build(directory)` writes the files
        and may return extra provenance. Under the lock, so a concurrent builder waits and then finds it
        done; an exception leaves error.txt (with the traceback) and no done marker, then propagates."""
        if self.is_done(art):
            return False
        with self.lock(art) as d:
            if self.is_done(art):
                return False
            remove_temporaries(d)
            # Process CPU time is the cost on a shared machine, where wall time depends on the neighbours. A
            # worker builds one artifact at a time, so the process's time is this build's (a resumed generator
            # counts only this attempt here; its own train stats carry the total).
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                extra = build(d) or {}
            except BaseException:
                self.mark_failed(art, traceback.format_exc())
                raise
            self.mark_done(art, time.perf_counter() - start, device=device,
                           cpu_seconds=time.process_time() - cpu_start, **extra)  # fmt: skip
            return True


# --- integrity -----------------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, CHECKSUM).hexdigest()


def content_files(d: Path) -> list[tuple[str, Path]]:
    """The artifact's own files (relative name, path), sorted: everything but the markers and dot-named
    temporaries."""
    out = []
    for f in sorted(d.rglob("*")):
        rel = f.relative_to(d)
        if f.is_file() and rel.as_posix() not in _NOT_CONTENT and not any(p.startswith(".") for p in rel.parts):
            out.append((rel.as_posix(), f))
    return out


def verify_dir(d: Path, names: tuple[str, ...] | None = None) -> str | None:
    """What is wrong with the finished artifact in `d` (naming the file), or None. See Store.verify."""
    done = read_json(d / DONE)
    if not isinstance(done, dict):
        return f"{d / DONE}: unreadable (not a JSON object)" if (d / DONE).exists() else f"{d} is not finished"
    files = done.get("files")
    if files is None:
        return None  # finished before checksums were recorded
    for rel, want in files.items():
        if names is not None and rel not in names:
            continue
        f = d / rel
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            return f"{f}: missing"
        if size != want["bytes"]:
            return f"{f}: truncated or changed ({size} bytes, {want['bytes']} when it was written)"
        if file_digest(f) != want[CHECKSUM]:
            return f"{f}: corrupted ({CHECKSUM} checksum differs from the one written)"
    return None


def remove_temporaries(d: Path) -> None:
    """Delete the dot-named temporaries (atomic writes, atomic directories) a killed writer left in `d`."""
    for child in d.iterdir():
        if child.name.startswith(".") and child.name != LOCK:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# --- provenance --------------------------------------------------------------------------------------

_PACKAGES = ("study", "torch", "torchvision", "diffusers", "timm", "numpy", "scikit-learn", "statsmodels", "pandas")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@cache
def git_state() -> dict:
    """Commit and dirty flag of the checkout `study` runs from (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            != ""
        )
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


@cache
def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(seconds: float, device: str, **extra: Any) -> dict:
    return {
        **git_state(),
        "packages": package_versions(),
        "device": device,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "seconds": round(seconds, 3),
        "finished": _now(),
        "pid": os.getpid(),
        **extra,
    }


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
