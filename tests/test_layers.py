"""The package's layer rules (docs/design/layers.md), checked on the source by tools/import_graph.py."""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layers_hold_and_the_picture_is_current():
    tool = _tool()
    graph = tool.module_graph(ROOT / "python" / "edgert")
    assert tool.violations(graph) == []
    assert tool.check_docs(graph, ROOT / "docs" / "design" / "layers.md") is None
    packages = tool.package_graph(graph)
    for app in ("mimo", "ams", "srvc"):
        assert not packages[app] & set(tool.APPLICATIONS), f"{app} imports {packages[app] & set(tool.APPLICATIONS)}"
    assert {"updates", "transport", "vision", "harness"} <= packages["ams"]


def test_checker_catches_cross_application_imports_cycles_and_upward_imports(tmp_path):
    """The checker itself, on a fake package: it must report each kind of violation."""
    tool = _tool()
    pkg = tmp_path / "edgert"
    files = {
        "__init__.py": "",
        "ams/__init__.py": "",
        "ams/server.py": "from edgert.srvc import model\n",  # application -> application
        "srvc/__init__.py": "",
        "srvc/model.py": "def f():\n    from edgert.updates import packet\n",  # allowed (lazy, downward)
        "updates/__init__.py": "",
        "updates/packet.py": "from edgert.updates import mirror\n",
        "updates/weights.py": "import edgert.ams.server\n",  # foundation -> application
        "updates/mirror.py": "from edgert.updates.packet import x\n",  # module cycle packet <-> mirror
        "vision/__init__.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from edgert.ams import server\n"),
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(textwrap.dedent(text))
    found = tool.violations(tool.module_graph(pkg))
    assert any("edgert.ams.server imports edgert.srvc.model: applications never import each other" in v for v in found)
    assert any("edgert.updates.weights imports edgert.ams.server: a foundation module imports from an application"
               in v for v in found)
    assert any("import cycle between modules: edgert.updates.mirror <-> edgert.updates.packet" in v for v in found)
    assert not any("vision" in v for v in found)  # TYPE_CHECKING imports never run
    assert not any("srvc.model imports" in v for v in found)
