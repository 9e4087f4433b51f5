"""The on-device inference runtime (edgert.infer): ONNX export with the manifest's tensor names, ONNX Runtime
sessions fed by the model slot, swaps between frames, refusals, and errors before the loop starts.

Weights reach the device as real update packets (edgert.updates encodes, libedgert's Slot verifies and
applies); the reference for every output is PyTorch eager on a module loaded with the slot's weights.
Tolerances: ONNX Runtime and ExecuTorch (XNNPACK) fp32 vs PyTorch eager fp32, rtol 1e-4 and atol 1e-5 times
the output's peak magnitude (at least 1): the same arithmetic with other kernels and summation orders;
measured differences are ~1e-7 of the peak.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import sys
import threading
import time

import numpy as np
import pytest
import torch

from conftest import needs_executorch, needs_onnxruntime, wait_for
from edgert._edgert import Slot
from edgert.infer import (
    DeviceRuntime,
    ExecuTorchBackend,
    ExecuTorchExport,
    ExportedModel,
    OnnxRuntimeBackend,
    TorchEagerBackend,
    WeightsSnapshot,
    argmax_labels,
    export_executorch,
    export_onnx,
    image_input,
)
from edgert.srvc.model import SRConfig, SRVCModel
from edgert.updates import (
    Manifest,
    PacketEncoder,
    TensorSpec,
    buffer_tensors,
    load_weights,
    module_manifest,
    module_weights,
    parameter_delta,
)
from edgert.vision import segmentation_student

pytestmark = needs_onnxruntime

RTOL, ATOL = 1e-4, 1e-5


def seg_model() -> torch.nn.Module:
    """The AMS student, small (width 0.25) and not pretrained (BatchNorm weights all ones: equal-valued
    initializers must keep their own names)."""
    return segmentation_student(3, width_mult=0.25, pretrained=False).eval()


def sr_model() -> torch.nn.Module:
    return SRVCModel(SRConfig(features=8, predictor_channels=16, body_channels=(16, 8))).eval()


MODELS = {"ams-seg": seg_model, "srvc-sr": sr_model}


@functools.cache
def exported_model(name: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, ExportedModel]:
    """One module per model and its export at ``shape`` (exports take seconds on a busy 2-core box)."""
    module = MODELS[name]()
    return module, export_onnx(module, torch.rand(shape))


@functools.cache
def executorch_model(name: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, ExecuTorchExport]:
    """One module per model and its ExecuTorch export at ``shape`` (torch.export + an XNNPACK lowering)."""
    module = MODELS[name]()
    return module, export_executorch(module, torch.rand(shape))


class Device:
    """A model slot fed by real packets from a server-side encoder (the devices' path minus the socket)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.manifest = module_manifest(module)
        self.encoder = PacketEncoder(self.manifest, value_coding="fp16")
        self.slot = Slot(self.manifest.to_bytes())
        self.slot.apply(self.encoder.snapshot(module_weights(module)).data)
        self.rng = np.random.default_rng(7)

    def update(self, scale: float = 0.05, density: float = 0.3) -> int:
        """A sparse update of ``density`` of the coordinates by N(0, scale); returns the new version."""
        target = copy.deepcopy(self.module)
        with torch.no_grad():
            for name, p in target.named_parameters():
                p.copy_(torch.from_numpy(self.encoder.mirror.tensor(name)))
                p.add_(torch.from_numpy(self.rng.normal(0, scale, p.shape).astype(np.float32)))
        masks = {n: torch.from_numpy(self.rng.random(p.shape) < density) for n, p in target.named_parameters()}
        self.slot.apply(self.encoder.update(parameter_delta(target, self.encoder.mirror, masks)).data)
        return int(self.slot.version)

    def eager(self) -> torch.nn.Module:
        """PyTorch eager with the slot's current weights."""
        model = copy.deepcopy(self.module)
        load_weights(model, buffer_tensors(self.manifest, self.slot.weights()[0]))
        return model


def tolerance(ref: np.ndarray) -> dict[str, float]:
    return {"rtol": RTOL, "atol": ATOL * max(1.0, float(np.abs(ref).max()))}


def reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def backend_for(kind: str, module: torch.nn.Module, exported):
    if kind == "executorch":
        return ExecuTorchBackend(exported)
    if kind == "ort":
        return OnnxRuntimeBackend(exported)
    if kind == "ort-zero-copy":
        return OnnxRuntimeBackend(exported, zero_copy=True)
    return TorchEagerBackend(module, input_shape=exported.input_shape)


# (model, input shape): batch 1 at odd sizes (SRVC: not a multiple of its patch), batch 2, a single pixel
PARITY_ROWS = [("ams-seg", (1, 3, 37, 53)), ("ams-seg", (2, 3, 16, 24)), ("srvc-sr", (1, 3, 13, 11)),
               ("srvc-sr", (2, 3, 5, 10)), ("srvc-sr", (1, 3, 1, 1))]


@pytest.mark.parametrize("kind", ["ort", "ort-zero-copy", "eager"])
@pytest.mark.parametrize("model_name,shape", PARITY_ROWS, ids=[f"{m}-{'x'.join(map(str, s))}" for m, s in PARITY_ROWS])
def test_parity_with_eager_before_and_after_an_update(model_name, shape, kind, one_thread):
    module, exported = exported_model(model_name, shape)
    check_parity_across_update(module, backend_for(kind, module, exported), shape, timeout=20)


def check_parity_across_update(module, backend, shape, timeout: float) -> None:
    """``backend`` on a slot holding ``module``'s weights matches eager on one input before a real update packet
    and after it (once the runtime runs the new version)."""
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    device = Device(module)
    with DeviceRuntime(backend, device.slot) as runtime:
        before = reference(device.eager(), x)
        out, version = runtime.infer_versioned(x)
        assert version == 1 and out.shape == before.shape
        np.testing.assert_allclose(out, before, **tolerance(before))
        new = device.update()
        runtime.on_update(new)
        assert runtime.wait_for_version(new, timeout=timeout)
        after = reference(device.eager(), x)
        assert np.abs(after - before).max() > 100 * ATOL  # the update changed the outputs
        out, version = runtime.infer_versioned(x)
        assert version == new
        np.testing.assert_allclose(out, after, **tolerance(after))


# ExecuTorch: every version is a new XNNPACK lowering (seconds; ~25 s for the student on the shared VM, so its
# rows are slow). One shape per model.
EXECUTORCH_ROWS = [pytest.param("srvc-sr", (1, 3, 13, 11), id="srvc-sr-1x3x13x11"),
                   pytest.param("ams-seg", (1, 3, 37, 53), id="ams-seg-1x3x37x53", marks=pytest.mark.slow)]


@needs_executorch
@pytest.mark.parametrize("model_name,shape", EXECUTORCH_ROWS)
def test_executorch_parity_with_eager_before_and_after_an_update(model_name, shape, one_thread):
    module, exported = executorch_model(model_name, shape)
    assert [(t.name, t.dtype, t.shape) for t in exported.slot_tensors] == \
        [(t.name, t.dtype, t.shape) for t in module_manifest(module).tensors]
    check_parity_across_update(module, ExecuTorchBackend(exported), shape, timeout=180)


@needs_executorch
def test_executorch_failed_build_keeps_the_old_program(monkeypatch, one_thread):
    import edgert.infer.backends as backends

    module, exported = executorch_model("srvc-sr", (1, 3, 13, 11))
    x = np.random.default_rng(3).random((1, 3, 13, 11), dtype=np.float32)
    device = Device(module)
    with DeviceRuntime(ExecuTorchBackend(exported), device.slot) as runtime:  # version 1: the export's .pte
        v1 = reference(device.eager(), x)

        def failing(program, weights=None):
            raise RuntimeError("XNNPACK lowering failed")

        monkeypatch.setattr(backends, "lower_executorch", failing)
        version = device.update()
        runtime.on_update()
        assert not runtime.wait_for_version(version, timeout=5)
        assert runtime.last_error is runtime.refused[version] and "XNNPACK lowering failed" in str(runtime.last_error)
        out, active = runtime.infer_versioned(x)
        assert active == 1
        np.testing.assert_allclose(out, v1, **tolerance(v1))


@needs_executorch
def test_executorch_errors_before_anything_runs(monkeypatch):
    module, exported = executorch_model("srvc-sr", (1, 3, 13, 11))
    other = Device(SRVCModel(SRConfig(features=8, predictor_channels=16, body_channels=(16, 4))).eval())
    runtime = DeviceRuntime(ExecuTorchBackend(exported), other.slot)
    with pytest.raises(ValueError, match="the slot's manifest does not match the exported program"):
        runtime.start()
    with pytest.raises(ValueError, match="executorch .* rejects the program"):
        ExecuTorchBackend(dataclasses.replace(exported, pte=b"garbage"))
    monkeypatch.setitem(sys.modules, "executorch", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install edgert\[executorch\]"):
        ExecuTorchBackend(exported)


def test_export_names_every_parameter_and_keeps_buffers_as_constants():
    module, exported = exported_model("ams-seg", (2, 3, 16, 24))
    manifest = module_manifest(module)
    assert [(t.name, t.dtype, t.shape) for t in exported.slot_tensors] == \
        [(t.name, t.dtype, t.shape) for t in manifest.tensors]
    buffers = {n for n, b in module.named_buffers() if b.is_floating_point()}
    assert set(exported.constants) <= buffers and "backbone.features.0.1.running_var" in exported.constants
    assert exported.input_shape == (2, 3, 16, 24) and exported.output_shape[:2] == (2, 3)
    again = ExportedModel.load(exported.model)  # the slot tensor list travels in the file's metadata
    assert again.slot_tensors == exported.slot_tensors


def test_export_checks_the_manifest():
    module = sr_model()
    manifest = module_manifest(module)
    specs = list(manifest.tensors)
    specs[0] = TensorSpec(specs[0].name, "float16", specs[0].shape)
    specs[1] = TensorSpec(specs[1].name, "float32", (specs[1].shape[0] + 1,))
    specs[2] = TensorSpec("no.such.tensor", "float32", specs[2].shape)
    with pytest.raises(ValueError) as err:
        export_onnx(module, torch.rand(1, 3, 10, 10), Manifest(manifest.model_id, tuple(specs)))
    text = str(err.value)
    assert f"{specs[0].name}: dtype float32 in the graph, float16 in the manifest" in text
    assert f"{specs[1].name}: shape" in text
    assert "no.such.tensor" in text and manifest.tensors[2].name in text  # missing, and not fed


@pytest.mark.parametrize("kind", ["ort", "eager"])
def test_mismatched_slot_manifest_raises_before_anything_runs(kind):
    module, exported = exported_model("ams-seg", (2, 3, 16, 24))
    other = Device(segmentation_student(4, width_mult=0.25, pretrained=False).eval())  # 4 classes, not 3
    runtime = DeviceRuntime(backend_for(kind, module, exported), other.slot)
    with pytest.raises(ValueError, match=r"classifier.weight: shape \[3, 64, 1, 1\] in the graph, \[4, 64, 1, 1\]"):
        runtime.start()
    with pytest.raises(RuntimeError, match="start"):
        runtime.infer(np.zeros((1, 3, 16, 16), np.float32))


def test_model_files_the_runtime_rejects():
    with pytest.raises(ValueError, match="not an ONNX model"):
        OnnxRuntimeBackend(b"\x08\x07garbage")
    import onnx

    exported = exported_model("srvc-sr", (1, 3, 13, 11))[1]
    proto = onnx.load_from_string(exported.model)
    proto.graph.node[0].op_type = "EdgertNoSuchOp"
    with pytest.raises(ValueError, match="rejects the model"):
        OnnxRuntimeBackend(proto.SerializeToString())


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    exported = exported_model("srvc-sr", (1, 3, 13, 11))[1]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install edgert\[onnx\]"):
        OnnxRuntimeBackend(exported)


def test_input_of_another_shape_is_a_clear_error():
    module, exported = exported_model("srvc-sr", (1, 3, 13, 11))
    runtime = DeviceRuntime(OnnxRuntimeBackend(exported), Device(module).slot).start()
    try:
        with pytest.raises(ValueError, match=r"expected float32 \[1, 3, 13, 11\].*got float32 \[1, 3, 12, 11\]"):
            runtime.infer(np.zeros((1, 3, 12, 11), np.float32))
    finally:
        runtime.stop()


@pytest.mark.parametrize("kind", ["ort", "ort-zero-copy", "eager", pytest.param("executorch", marks=needs_executorch)])
def test_swaps_never_tear(kind, one_thread):
    """A thread runs frames while versions arrive: each output is its version's eager output and no other's.

    ExecuTorch runs SRVC with one update: each of its versions is an XNNPACK lowering of seconds (the
    student's take ~25 s here).
    """
    if kind == "executorch":
        shape: tuple[int, ...] = (1, 3, 13, 11)
        module, exported = executorch_model("srvc-sr", shape)
    else:
        shape = (2, 3, 16, 24)
        module, exported = exported_model("ams-seg", shape)
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    device = Device(module)
    expected = {1: reference(device.eager(), x)}
    results: list[tuple[np.ndarray, int]] = []
    stop = threading.Event()
    with DeviceRuntime(backend_for(kind, module, exported), device.slot, poll_s=0.01) as runtime:
        def frames() -> None:
            while not stop.is_set():
                results.append(runtime.infer_versioned(x))
                if kind == "executorch":  # paced: a 1 ms frame loop would starve the (Python) lowering of the GIL
                    time.sleep(0.005)

        worker = threading.Thread(target=frames)
        worker.start()
        try:
            for _ in range(1 if kind == "executorch" else 3):
                version = device.update(scale=0.05, density=1.0)
                expected[version] = reference(device.eager(), x)
                runtime.on_update(version)
                assert runtime.wait_for_version(version, timeout=120)
                n = len(results)
                assert wait_for(lambda: len(results) > n + 2)  # frames on this version
        finally:
            stop.set()
            worker.join()
    versions = [v for _, v in results]
    assert versions == sorted(versions) and set(versions) == set(expected)
    for out, version in results:
        close = [v for v, ref in expected.items() if np.allclose(out, ref, **tolerance(ref))]
        assert close == [version]


def test_refused_versions_keep_the_old_session(one_thread):
    module, exported = exported_model("srvc-sr", (1, 3, 13, 11))
    x = np.random.default_rng(3).random((1, 3, 13, 11), dtype=np.float32)
    device = Device(module)
    backend = OnnxRuntimeBackend(exported)
    failing = {3}

    class Flaky:
        name = "flaky-onnxruntime"

        def check_manifest(self, manifest):
            backend.check_manifest(manifest)

        def prepare(self, weights: WeightsSnapshot):
            if weights.version in failing:
                raise RuntimeError("out of memory building the session")
            return backend.prepare(weights)

    lines: list[str] = []
    with DeviceRuntime(Flaky(), device.slot, log=lines.append) as runtime:
        v1 = reference(device.eager(), x)
        # version 2 holds an infinity (an authentic packet from a diverged training step)
        name = device.manifest.tensors[0].name
        packet = device.encoder.update({name: (np.array([0], np.int64), np.array([np.inf], np.float32), "set")})
        device.slot.apply(packet.data)
        runtime.on_update()
        assert not runtime.wait_for_version(2, timeout=10)
        assert runtime.version == 1 and 2 in runtime.refused
        assert "non-finite weights" in str(runtime.refused[2].cause) and name in str(runtime.refused[2].cause)
        np.testing.assert_allclose(runtime.infer(x), v1, **tolerance(v1))
        # version 3 repairs the weights but its session build fails: still version 1
        device.slot.apply(device.encoder.update({name: (np.array([0], np.int64), np.array([0.1], np.float32),
                                                        "set")}).data)
        runtime.on_update()
        assert not runtime.wait_for_version(3, timeout=10)
        assert runtime.last_error is runtime.refused[3] and runtime.last_error.version == 3
        assert isinstance(runtime.last_error.cause, RuntimeError)
        assert any("slot version 3 refused" in line for line in lines)
        np.testing.assert_allclose(runtime.infer(x), v1, **tolerance(v1))
        # version 4 builds: the runtime moves on
        version = device.update()
        runtime.on_update()
        assert runtime.wait_for_version(version, timeout=20)
        ref = reference(device.eager(), x)
        np.testing.assert_allclose(runtime.infer(x), ref, **tolerance(ref))


def test_infer_notices_new_versions_without_callbacks(one_thread):
    module, exported = exported_model("srvc-sr", (1, 3, 13, 11))
    x = np.random.default_rng(4).random((1, 3, 13, 11), dtype=np.float32)
    device = Device(module)
    with DeviceRuntime(OnnxRuntimeBackend(exported), device.slot,
                       poll_s=60) as runtime:
        version = device.update()
        runtime.infer(x)  # sees slot.version > active version and wakes the builder
        assert runtime.wait_for_version(version, timeout=20)


def test_edge_client_feeds_the_runtime(one_thread):
    """End to end: ModelServer -> socket -> EdgeClient's slot -> DeviceRuntime (frames in, labels out)."""
    from edgert.transport import EdgeClient, ModelServer

    module, exported = exported_model("ams-seg", (1, 3, 37, 53))
    frame = np.random.default_rng(5).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    manifest = module_manifest(module)
    key = b"k" * 32
    with ModelServer(manifest, {"cam": key}, module_weights(module)) as server:
        client = EdgeClient(server.address, "cam", key).start()
        try:
            assert wait_for(lambda: client.version == server.version)
            runtime = DeviceRuntime(OnnxRuntimeBackend(exported), lambda: client.slot, preprocess=image_input,
                                    postprocess=argmax_labels)
            runtime.attach(client)
            with runtime:
                target = copy.deepcopy(module)
                with torch.no_grad():
                    for p in target.parameters():
                        p.add_(torch.randn_like(p) * 0.1)
                server.publish(parameter_delta(target, server.mirror))
                assert runtime.wait_for_version(server.version, timeout=20)
                eager = copy.deepcopy(module)
                load_weights(eager, buffer_tensors(manifest, client.slot.weights()[0]))
                logits = reference(eager, image_input(frame))
                labels = runtime.infer(frame)
                assert labels.shape == (37, 53) and labels.dtype == np.int64
                margin = np.sort(logits[0], axis=0)
                clear = (margin[-1] - margin[-2]) > 1e-4  # pixels whose argmax is not a near-tie
                assert np.array_equal(labels[clear], logits[0].argmax(0)[clear])
        finally:
            client.stop()


def test_image_input_is_the_ams_edge_conversion():
    frame = np.random.default_rng(6).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    edge = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div_(255.0).numpy()  # AMSEdge.infer's
    assert np.array_equal(image_input(frame), edge)
    with pytest.raises(ValueError, match=r"expected uint8 \[H, W, 3\]"):
        image_input(frame.astype(np.float32))
