import json
import subprocess
import sys

import pytest

import edgert
from edgert import _edgert
from edgert._info import cuda_module
from edgert.cli import main


def test_info_reports_version_and_backends():
    runtime = edgert.info()
    assert runtime.version == edgert.__version__
    assert runtime.backends["cpu"]["usable"] is True
    assert runtime.backends["cpu"]["num_threads"] >= 1
    cuda = runtime.backends["cuda"]
    assert cuda["usable"] == edgert.cuda_available()
    if not cuda["compiled"]:
        assert not cuda["usable"]
    assert "openmp=" in runtime.build_flags
    assert ("signatures=1" in runtime.build_flags) == _edgert.signatures_available()
    assert "edgert " + runtime.version in str(runtime)


def test_cli_info_json(capsys):
    assert main(["info", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["backends"]) == {"cpu", "cuda"}


def test_import_does_not_need_cuda_driver():
    # A clean interpreter imports edgert and queries CUDA without raising,
    # whether or not the CUDA module was built or a driver exists.
    code = "import edgert; print(edgert.cuda_available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() in ("True", "False")


def test_registry_of_the_cpu_module():
    # The CPU module's libedgert registers the CPU only; its answers match backend_query.
    registry = _edgert.backends()
    assert set(registry) == {"cpu", "cuda"}
    assert registry["cpu"]["usable"] is True
    assert registry["cpu"] == _edgert.backend_query(_edgert.BACKEND_CPU)
    assert registry["cuda"]["compiled"] is False and registry["cuda"]["usable"] is False
    assert _edgert.backend_select("auto", []) == "cpu"
    assert _edgert.backend_select(_edgert.BACKEND_AUTO, [0, 4096]) == "cpu"  # null entries are skipped
    assert _edgert.backend_select("cpu") == "cpu"
    with pytest.raises(edgert.EdgertError, match="built without CUDA kernels") as err:
        _edgert.backend_select("cuda", [])
    assert err.value.status_name == "EDGERT_ERR_BACKEND_UNAVAILABLE"
    with pytest.raises(ValueError, match=r"unknown backend 3 \(expected EDGERT_BACKEND_CPU = 0"):
        _edgert.backend_select(3, [])
    with pytest.raises(ValueError, match="backend: expected 'auto', 'cpu' or 'cuda'"):
        _edgert.backend_select("gpu", [])
    with pytest.raises(ValueError, match="AUTO is a choice, not a backend"):
        _edgert.backend_query(_edgert.BACKEND_AUTO)


def test_cuda_module_registry_agrees_with_cuda_available():
    module = cuda_module()
    if module is None:
        pytest.skip("the CUDA module was not built")
    cuda = module.backends()["cuda"]
    assert cuda["compiled"] is True
    assert cuda["usable"] == edgert.cuda_available()
    if not cuda["usable"]:
        with pytest.raises(edgert.EdgertError, match="compiled in but no device is usable"):
            module.backend_select("cuda", [])
        assert module.backend_select("auto", []) == "cpu"
