"""``python -m evaluation.report`` on a tiny sweep of two runs: report.md / .csv / .tex with the expected rows and
columns, pictures, missing metrics, --evaluate, and command-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from evaluation.report import cell, differing_settings, find_runs, load_rows, main, tex_escape
from inpaint_anon.evaluate import evaluate_run
from inpaint_anon.inpaint.fast import BlurInpainter, SolidInpainter
from inpaint_anon.metrics import MetricsConfig
from tests.clips import make_clip
from tests.test_evaluate import FRAMES, SIZE, make_run

OFFLINE = {"download": False, "device": "cpu"}
"""Metrics config stored in the runs' run.json: no network, weights uncached -> LPIPS and FID skipped."""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/multiruns/<date>/{0,1}: a solid fill at crf 18 (evaluated) and a blur at crf 23 (not yet)."""
    root = tmp_path_factory.mktemp("report")
    clip = make_clip(root / "clip.mp4", n_frames=FRAMES, size=SIZE)
    folder = root / "multiruns" / "2025-01-01_10-00-00"
    make_run(folder, "0", clip, SolidInpainter(device="cpu"), settings={"metrics": OFFLINE})
    make_run(folder, "1", clip, BlurInpainter(device="cpu"), settings={"metrics": OFFLINE, "video": {"crf": 23}})
    evaluate_run(folder / "0", MetricsConfig(lpips=False, fid=False))
    return folder


@pytest.fixture(autouse=True)
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _md_table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in rows if not line.startswith("|---")]


def test_report_of_a_sweep_writes_three_files_with_rows_and_columns(sweep: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "report.md"), str(out / "report.csv"), str(out / "report.tex")]

    table = _md_table((out / "report.md").read_text())
    header, rows = table[0], table[1:]
    assert header[:4] == ["run", "status", "inpainter", "video.crf"]  # only the settings that differ
    for column in ("all/psnr_out ↑", "all/ssim_out ↑", "person/psnr_in ↓", "car/ssim_in ↓", "person/flicker ↓",
                   "person/flicker_orig", "car/flicker_ratio ↓"):
        assert column in header
    assert not any("lpips" in h or "fid" in h for h in header)  # nobody has them
    assert header.index("all/psnr_out ↑") < header.index("car/psnr_out ↑") < header.index("person/psnr_out ↑")
    assert [r[0] for r in rows] == ["2025-01-01_10-00-00/0", "2025-01-01_10-00-00/1"]
    assert rows[0][1:4] == ["ok", "SolidInpainter", "18"] and rows[1][2:4] == ["BlurInpainter", "23"]
    assert rows[1][1].startswith("no metrics.json") and set(rows[1][4:]) == {""}
    assert float(rows[0][header.index("person/psnr_in ↓")]) < 10

    with (out / "report.csv").open(newline="", encoding="utf-8") as file:
        records = list(csv.reader(file))
    assert records[0] == header and len(records) == 3
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert float(records[1][header.index("person/ssim_in ↓")]) == metrics["classes"]["person"]["ssim_in"]

    tex = (out / "report.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "person/psnr\\_in $\\downarrow$" in tex and "all/psnr\\_out $\\uparrow$" in tex
    assert tex.count("2025-01-01\\_10-00-00/") == 2

    markdown = (out / "report.md").read_text()
    pictures = [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]
    assert sorted(pictures) == ["images/2025-01-01_10-00-00_0__car.png", "images/2025-01-01_10-00-00_0__person.png"]
    with Image.open(out / pictures[0]) as image:
        assert image.height == 192 and image.width > 3 * 192  # original | anonymized | mask
    assert "## Metrics" in markdown and "`psnr_in` ↓" in markdown and "NOT changed" in markdown
    assert "## Skipped metrics" in markdown and "lpips: disabled" in markdown


def test_report_can_evaluate_missing_runs(sweep: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    (copy / "2").mkdir()
    (copy / "2" / ".hydra").mkdir()  # a failed job: Hydra made its folder, no run.json
    assert main([str(copy), "--out", str(tmp_path / "out"), "--evaluate", "--no-images", "--classes", "person",
                 "--metrics", "psnr_out,psnr_in,fid"]) == 0
    assert (copy / "1" / "metrics.json").is_file()
    table = _md_table((tmp_path / "out" / "report.md").read_text())
    assert table[0] == ["run", "status", "inpainter", "video.crf", "person/psnr_out ↑", "person/psnr_in ↓"]
    assert [r[1] for r in table[1:]] == ["ok", "ok", "failed (no readable run.json)"]
    document = json.loads((copy / "1" / "metrics.json").read_text())
    assert "metrics.lpips_weights" in document["skipped"]["lpips"]  # the run's own config: downloads off
    assert not (tmp_path / "out" / "images").exists()


def test_single_run_folders_and_cells() -> None:
    assert cell(None, "fid", "md") == "—" and cell(None, "fid", "csv") == ""
    assert cell("inf", "psnr_in", "md") == "∞" and cell("inf", "psnr_in", "tex") == "$\\infty$"
    assert cell(31.234567, "psnr_out", "md") == "31.23" and cell(0.91234, "ssim_out", "md") == "0.9123"
    assert cell(0.5, "leak_rate", "md") == "0.500" and cell(0.1234, "psnr_out", "csv") == "0.1234"
    assert tex_escape("a_b & 50% ↑") == "a\\_b \\& 50\\% $\\uparrow$" and tex_escape("$\\infty$") == "$\\infty$"


def test_differing_settings_from_config_or_overrides(sweep: Path, tmp_path: Path) -> None:
    rows = load_rows(find_runs([sweep / "0", sweep / "1"]))
    assert [r.name for r in rows] == ["0", "1"]
    assert differing_settings(rows) == ["inpainter", "video.crf"]
    for name, overrides in (("a", ["inpainter=blur", "+seed=1"]), ("b", ["inpainter=solid"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"overrides": overrides}))
    assert differing_settings(load_rows(find_runs([tmp_path / "a", tmp_path / "b"]))) == ["inpainter", "seed"]
    for name in ("c", "d"):  # resolved configs of a sweep's jobs: each writes its own output file
        (tmp_path / name).mkdir()
        config = {"output": f"/sweep/{name}/anon.mp4", "inpainter": {"steps": 10 if name == "c" else 20}}
        (tmp_path / name / "run.json").write_text(json.dumps({"config": config}))
    assert differing_settings(load_rows(find_runs([tmp_path / "c", tmp_path / "d"]))) == ["inpainter.steps"]


@pytest.mark.parametrize(("args", "needle"), [
    (["{missing}", "--out", "{out}"], "is not a folder"),
    (["{empty}", "--out", "{out}"], "has no run.json and no job folders"),
    (["{sweep}"], "the following arguments are required: --out"),
    (["{sweep}", "--out", "{out}", "--metrics", "psnr,fid"], "unknown metric(s) psnr"),
    (["--out", "{out}"], "the following arguments are required: paths"),
])
def test_report_errors_exit_2_with_one_line(args: list[str], needle: str, sweep: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    values = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "out": tmp_path / "out", "sweep": sweep}
    assert main([a.format(**values) for a in args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], errors
