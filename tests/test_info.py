import json
import subprocess
import sys

import edgert
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
