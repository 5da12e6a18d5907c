"""Device and precision policy (study.models.device): one resolver for every model, `precision: auto` by the
machine's bf16 instructions and a cached micro-benchmark (mocked both ways here), the choice and its reason in
the generator's and the classifier's stats."""

from __future__ import annotations

import json

import pytest
import torch

import study.models.device as device
from study.errors import DeviceError, ModelSpecError
from study.grid import ClassifierSpec, GeneratorTrainSpec, ModelSpec
from study.models.device import Precision, cpu_precision, resolve_device, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A CPU whose bf16 flags and measured bf16/fp32 ratio the test sets; counts the measurements."""
    monkeypatch.setattr(device, "_MEMO", {})
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    state = {"flags": ("avx512_bf16", "amx_bf16"), "ratio": 2.0, "measured": 0}

    def measure():
        state["measured"] += 1
        return state["ratio"]

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: state["flags"])
    monkeypatch.setattr(device, "measure_bf16_speedup", measure)
    return state


def test_auto_device_and_clear_errors():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == CPU and resolve_device(CPU) is CPU
    with pytest.raises(DeviceError, match=r"device: 'gpu' is not a device; expected auto, cpu, cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"--device: 'cuda:1' was asked for but CUDA is not available"):
            resolve_device("cuda:1", key="--device")


def test_asked_precision_is_kept_and_fp16_needs_cuda():
    assert resolve_precision("bf16", CPU, key="train.precision") == Precision(
        "bf16", "asked for (train.precision: bf16)"
    )
    assert resolve_precision("fp32", CPU).name == "fp32"
    with pytest.raises(ModelSpecError, match=r"classifier\.precision: fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU, key="classifier.precision")
    with pytest.raises(ModelSpecError, match=r"train\.precision: 'half' is not a precision"):
        resolve_precision("half", CPU, key="train.precision")


def test_cpu_without_bf16_instructions_is_fp32_without_measuring(machine):
    machine["flags"] = ()
    choice = cpu_precision()
    assert choice.name == "fp32" and "no bf16 instructions" in choice.reason
    assert machine["measured"] == 0


def test_cpu_with_bf16_instructions_follows_the_measurement(machine):
    machine["ratio"] = 2.5
    choice = resolve_precision("auto", CPU)
    assert choice.name == "bf16" and "2.50x as fast" in choice.reason and "amx_bf16" in choice.reason


def test_slow_bf16_stays_fp32(machine):
    machine["ratio"] = 0.7
    choice = cpu_precision()
    assert choice.name == "fp32" and "only 0.70x" in choice.reason
    machine["ratio"] = 1.05  # within the margin: not worth bf16's rounding
    device._MEMO.clear()
    assert cpu_precision(cache_dir=device.default_cache_dir() / "elsewhere").name == "fp32"


def test_the_measurement_is_cached_per_machine(machine, tmp_path):
    assert cpu_precision().name == "bf16" and machine["measured"] == 1
    assert cpu_precision().name == "bf16" and machine["measured"] == 1  # memoised in the process
    device._MEMO.clear()  # a new process reads the cache file
    assert cpu_precision().name == "bf16" and machine["measured"] == 1
    cached = json.loads((tmp_path / device.PROBE_FILE).read_text())
    assert cached[device.probe_fingerprint()]["bf16_over_fp32"] == 2.0


def test_cuda_without_bf16_is_fp16_for_every_model(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    choice = resolve_precision("auto", torch.device("cuda"))
    assert choice == Precision("fp16", "auto: Tesla T4 has no bf16; fp16 with loss scaling")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda")).name == "bf16"


@pytest.mark.parametrize(("ratio", "expected"), [(3.0, "bf16"), (0.6, "fp32")])
def test_generator_and_classifier_record_the_choice_and_its_reason(machine, tmp_path, ratio, expected):
    from study.data.datasets import Split
    from study.models.classifier import train_classifier
    from study.models.generator import load_generator, train_generator

    machine["ratio"] = ratio
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(16) % 4
    spec = GeneratorTrainSpec(steps=2, batch_size=4, warmup=0)
    stats = train_generator(
        ModelSpec(preset="tiny"), spec, images, labels, 4, tmp_path, seed=0, flip=False, device="cpu", progress=False
    )
    assert stats["precision"] == expected and f"{ratio:.2f}x" in stats["precision_reason"]
    assert load_generator(tmp_path, device="cpu").precision.name == expected  # sampling follows the same policy
    clf = ClassifierSpec(arch="study_cnn", width=8, steps=2, batch_size=8)
    _, clf_stats = train_classifier(clf, Split(images, labels), 4, seed=0, flip=False, device="cpu")
    assert clf_stats["precision"] == expected and clf_stats["precision_reason"] == stats["precision_reason"]
    assert machine["measured"] == 1  # measured once for both
