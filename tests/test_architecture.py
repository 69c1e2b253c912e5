"""The library's layers: import-linter's contracts (pyproject.toml) hold, the top level holds
only the phase subpackages, and the ONNX runtime path really runs without torch."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO

LIBRARY = REPO / "src" / "detflow"
PHASES = {"core", "data", "model", "train", "evaluate", "deploy", "serve", "pipeline"}


def test_import_linter_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "5 kept" in done.stdout, done.stdout[-2000:]


def test_top_level_holds_only_the_subpackages_cli_and_init():
    entries = {p.name for p in LIBRARY.iterdir() if p.name != "__pycache__"}
    assert entries == PHASES | {"cli.py", "__init__.py"}
    for phase in PHASES:
        doc = (LIBRARY / phase / "__init__.py").read_text()
        assert doc.startswith('"""') and len(doc.splitlines()) >= 3, phase


def test_predict_path_imports_no_torch():
    """Importing and using the predict path leaves torch unloaded: a deploy machine needs
    ONNX Runtime only (the import-linter contract checks the imports as written)."""
    code = (
        "import sys, numpy as np\n"
        "import detflow.deploy.predict, detflow.deploy.onnx_detector\n"
        "import detflow.serve.app, detflow.serve.reload, detflow.cli\n"
        "from detflow.deploy.onnx_postprocess import apply_postprocess\n"
        "from detflow.model.postprocess_config import PostprocessOptions\n"
        "config = PostprocessOptions(score_threshold=0.1, nms_iou=0.5, max_detections=5,"
        " soft_nms='gaussian')\n"
        "apply_postprocess(np.zeros((1, 4)), [0.9], [1], config=config)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
