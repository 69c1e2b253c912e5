"""The crash probe: a real exported model runs every probe size in a child process; a child
that dies by a signal, or fails, is reported with the input size it was on, and the optimize
benchmark rejects such a variant instead of measuring (and maybe deploying) it."""

from __future__ import annotations

import pytest

from detflow.deploy import crash_probe
from detflow.deploy.benchmark import benchmark
from detflow.deploy.variants import Variant

SEGFAULT_ON_SECOND = (
    "import os, signal; print('size 416×416', flush=True); print('size 386×436', flush=True);"
    " os.kill(os.getpid(), signal.SIGSEGV)"
)


def test_a_real_model_survives_every_probe_size(served_model):
    model, _ = served_model
    assert crash_probe.crash_reason(model) is None


def test_a_crash_names_the_signal_and_the_input_size(served_model, monkeypatch):
    monkeypatch.setattr(crash_probe, "CHILD", SEGFAULT_ON_SECOND)
    reason = crash_probe.crash_reason(served_model[0])
    assert reason == "the runtime crashed the process (SIGSEGV) on a 386×436 input"


def test_a_model_that_does_not_load_is_reported(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    reason = crash_probe.crash_reason(broken)
    assert reason.startswith("failed while loading: ") and "broken.onnx" in reason


def test_the_benchmark_rejects_a_variant_that_crashes(served_model, monkeypatch):
    monkeypatch.setattr(crash_probe, "CHILD", SEGFAULT_ON_SECOND)
    table = benchmark(variants=[Variant("int8_static", served_model[0])], dataset=[None])
    assert table == {
        "int8_static": {
            "status": "rejected: the runtime crashed the process (SIGSEGV) on a 386×436 input"
        }
    }


@pytest.mark.parametrize("providers", [["CPUExecutionProvider"], []])
def test_cpu_and_openvino_variants_are_probed(providers):
    from detflow.deploy.benchmark import on_cpu

    assert on_cpu(Variant("x", None, providers))
    assert not on_cpu(Variant("x", None, [("TensorrtExecutionProvider", {}), providers or "a"]))
