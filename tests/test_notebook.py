"""notebooks/demo.ipynb runs headless, top to bottom, offline, on a few frames of the sample clip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "demo.ipynb"
FRAMES = 6


def _with_parameters(notebook: nbformat.NotebookNode, **values: object) -> nbformat.NotebookNode:
    """Append assignments to the cell tagged ``parameters`` (as papermill does), so they win over its defaults."""
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "demo.ipynb needs exactly one cell tagged 'parameters'"
    lines = [f"{name} = {value!r}" for name, value in values.items()]
    cells[0].source += "\n# injected by tests/test_notebook.py\n" + "\n".join(lines) + "\n"
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """All stream / text output of the executed notebook, and the MIME types of its rich outputs."""
    text, kinds = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text.append(output.get("text", ""))
            kinds += list(output.get("data", {}))
            text.append(output.get("data", {}).get("text/plain", ""))
    return "".join(text), kinds


def test_demo_notebook_executes_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inpaint_anon.video import probe

    # the kernel inherits this environment: no network, no display
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), MAX_FRAMES=FRAMES,
                                OUTPUT_DIR=str(tmp_path), GENERATOR="tiny")

    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()

    output = tmp_path / "street_anon.mp4"
    assert output.is_file()
    meta = probe(output)
    assert (meta.width, meta.height, meta.n_frames) == (768, 576, FRAMES)
    assert (tmp_path / "frames.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "detections.dets").is_file()
    text, kinds = _outputs(notebook)
    assert "image/png" in kinds, "the original | mask | anonymized figure is not shown inline"
    assert "FALLBACK detector" in text or "COCO weights" in text
    assert "tiny random model" in text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["frames_evaluated"] == FRAMES and "person" in metrics["classes"]
    assert "psnr_out" in text, "the per-class metrics are not printed"


def test_demo_notebook_is_committed_clean_of_errors() -> None:
    """The committed notebook has no error outputs and one parameters cell."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert not [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in notebook.cells) == 1
    assert any("Per-class metrics" in c.source for c in notebook.cells if c.cell_type == "markdown")
