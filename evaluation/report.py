"""Paper tables from run folders: ``report.md``, ``report.csv`` and ``report.tex``, plus one picture per run and class.

Usage::

    python -m evaluation.report RUN_OR_SWEEP_DIR [RUN_OR_SWEEP_DIR ...] --out DIR [--evaluate]
        [--classes all,person,car] [--metrics psnr_out,ssim_out,fid] [--no-images]

- A folder with a ``run.json`` is one run; any other folder is a sweep (``experiments/multiruns/<date>``) and
  stands for its job folders (sub-folders with a ``run.json`` or Hydra's ``.hydra``), in job-number order.
- One row per run. Columns: ``run``; ``status``; the config values that DIFFER between the runs (flattened
  ``run.json`` ``config`` keys such as ``inpainter.strength``; a differing ``<group>._target_`` becomes one
  ``<group>`` column with the class name; runs without a ``config`` fall back to their ``overrides``); then per
  class (``all`` first) and metric a column ``<class>/<metric> <arrow>``, the arrow from the metric's
  direction in ``metrics.json`` (↑ higher is better, ↓ lower is better, none: a reference value).
- Runs without ``metrics.json`` are reported with status ``no metrics.json`` and empty cells, unless
  ``--evaluate`` is given: then they are evaluated first (``inpaint_anon.evaluate.evaluate_run`` with the
  run's own metrics config) and ``metrics.json`` is written into them. A job folder without ``run.json`` (a
  failed job) gets status ``failed (no run.json)``.
- Cells: numbers rounded for reading (dB and levels 2 decimals, fractions 3, others 4; the CSV keeps full
  precision); an infinite PSNR (identical pixels) is ∞ (``inf`` in CSV); undefined values are — (empty in CSV)
  and their reasons are listed under the table in report.md.
- Pictures (``images/<run>__<class>.png``, linked from report.md): for each run and class, the frame in which
  the class's largest region appears (``metrics.json`` ``examples``), cropped square around it:
  original | anonymized | mask (the class's masks in that frame, white).

Exit code 0, or 2 with one ``error: ...`` line for a bad path or option.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inpaint_anon.errors import InpaintAnonError, InputError
from inpaint_anon.metrics.config import METRICS

PER_JOB_KEYS = ("output",)
"""Resolved config keys that name each job's own files (``${hydra:runtime.output_dir}/anon.mp4`` in a sweep):
different in every run, so never a column of settings."""
PICTURE_HEIGHT = 192
"""Pixels: each panel of a picture is resized to this height."""
PICTURE_PADDING = 0.3
"""The picture's square crop is the region's box side times 1 + this."""


@dataclass
class RunRow:
    """One row of the report: ``path``, ``name``, ``status`` (``ok`` or why there are no numbers), the run's
    ``record`` (run.json) and ``metrics`` (metrics.json) when present, and ``pictures`` (class -> PNG path)."""

    path: Path
    name: str
    status: str
    record: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    pictures: dict[str, Path] = field(default_factory=dict)


# -- finding runs -------------------------------------------------------------------------------------------


def _job_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def find_runs(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(run folder, display name) for every run named by ``paths`` (runs, or sweeps expanded to their jobs).

    Raises InputError for a path that does not exist or a folder holding no run."""
    found: list[tuple[Path, str]] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise InputError(f"{path} is not a folder; give run folders or sweep folders")
        if (path / "run.json").is_file():
            found.append((path, path.name))
            continue
        jobs = sorted((d for d in path.iterdir() if d.is_dir() and ((d / "run.json").is_file() or
                                                                     (d / ".hydra").is_dir())), key=_job_order)
        if not jobs:
            raise InputError(f"{path} has no run.json and no job folders; give a run folder "
                             "(experiments/runs/<run>) or a sweep folder (experiments/multiruns/<date>)")
        found.extend((job, f"{path.name}/{job.name}") for job in jobs)
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def load_rows(runs: Iterable[tuple[Path, str]], *, evaluate: bool = False) -> list[RunRow]:
    """A RunRow per run; with ``evaluate``, runs without metrics.json are evaluated first."""
    rows = []
    for path, name in runs:
        record = _read_json(path / "run.json")
        if record is None:
            rows.append(RunRow(path, name, "failed (no readable run.json)"))
            continue
        metrics = _read_json(path / "metrics.json")
        status = "ok"
        if metrics is None and evaluate:
            from inpaint_anon.evaluate import evaluate_run

            try:
                metrics = evaluate_run(path)
            except InpaintAnonError as error:
                status = f"not evaluated: {error}"
        elif metrics is None:
            status = "no metrics.json (run python -m inpaint_anon.evaluate, or pass --evaluate)"
        rows.append(RunRow(path, name, status, record, metrics or {}))
    return rows


# -- columns ------------------------------------------------------------------------------------------------


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values of nested dicts (lists are leaves)."""
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _settings(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's settings as dotted key -> value: its config, else its overrides."""
    config = record.get("config")
    if isinstance(config, Mapping) and config:
        flat = flatten(config)
    else:
        flat = {}
        for item in record.get("overrides") or []:
            key, _, value = str(item).partition("=")
            flat[key.lstrip("+~")] = value
    settings = {}
    for key, value in flat.items():
        if key in PER_JOB_KEYS:
            continue
        if key.endswith("._target_") or key == "_target_":
            group = key.removesuffix("._target_") or "_target_"
            settings[group] = str(value).rsplit(".", 1)[-1]
        else:
            settings[key] = value
    return settings


def differing_settings(rows: Sequence[RunRow]) -> list[str]:
    """Setting keys whose value differs between the runs (absent counts as a value), in first-seen order; a
    group column (from ``_target_``) hides nothing: its sub-keys are listed too when they differ."""
    per_run = [_settings(row.record) for row in rows if row.record]
    keys: list[str] = []
    for settings in per_run:
        keys.extend(k for k in settings if k not in keys)
    return [k for k in keys
            if len({json.dumps(s[k], default=str, sort_keys=True) if k in s else "\0absent" for s in per_run}) > 1]


def metric_columns(rows: Sequence[RunRow], classes: Sequence[str] | None,
                   metrics: Sequence[str] | None) -> list[tuple[str, str]]:
    """(class, metric) pairs with a value in some run, ``all`` first then classes by name, metrics in
    :data:`~inpaint_anon.metrics.config.METRICS` order; restricted to ``classes`` / ``metrics`` when given."""
    present: dict[str, set[str]] = {}
    for row in rows:
        for name, values in (row.metrics.get("classes") or {}).items():
            present.setdefault(name, set()).update(values)
    names = sorted(present, key=lambda n: (n != "all", n))
    if classes:
        names = [n for n in classes if n in present]
    order = list(metrics) if metrics else list(METRICS)
    return [(name, metric) for name in names for metric in order if metric in present[name]]


def _direction(rows: Sequence[RunRow], metric: str) -> str:
    for row in rows:
        info = (row.metrics.get("metrics") or {}).get(metric)
        if isinstance(info, Mapping) and "arrow" in info:
            return str(info["arrow"])
    return METRICS[metric].arrow if metric in METRICS else ""


def column_label(name: str, metric: str, arrow: str) -> str:
    return f"{name}/{metric} {arrow}".rstrip()


# -- cells ----------------------------------------------------------------------------------------------------


def _digits(metric: str) -> int:
    unit = METRICS[metric].unit if metric in METRICS else ""
    if metric == "fid" or unit in ("dB", "levels"):
        return 2
    return 3 if unit == "fraction" or metric == "flicker_ratio" else 4


def cell(value: Any, metric: str, style: str) -> str:
    """A value as text for ``style`` ``md`` | ``tex`` | ``csv``."""
    if value is None:
        return {"md": "—", "tex": "--", "csv": ""}[style]
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return {"md": "∞", "tex": r"$\infty$", "csv": "inf"}[style]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value)) if style == "csv" else f"{value:.{_digits(metric)}f}"
    return str(value)


def _setting_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


@dataclass
class Table:
    """The report's table: ``header`` labels, ``rows`` of cells per style, and ``notes`` for report.md."""

    header: list[str]
    cells: dict[str, list[list[str]]]
    undefined: list[str]
    skipped: list[str]


def build_table(rows: Sequence[RunRow], classes: Sequence[str] | None = None,
                metrics: Sequence[str] | None = None) -> Table:
    settings = differing_settings(rows)
    columns = metric_columns(rows, classes, metrics)
    header = ["run", "status", *settings,
              *(column_label(name, metric, _direction(rows, metric)) for name, metric in columns)]
    cells: dict[str, list[list[str]]] = {"md": [], "tex": [], "csv": []}
    undefined, skipped = [], []
    for row in rows:
        values = _settings(row.record) if row.record else {}
        table_classes = row.metrics.get("classes") or {}
        for style in cells:
            line = [row.name, row.status, *(_setting_text(values[k]) if k in values else "" for k in settings)]
            if row.metrics:
                line += [cell(table_classes.get(name, {}).get(metric), metric, style) for name, metric in columns]
            else:  # not evaluated: empty, unlike an undefined value
                line += [""] * len(columns)
            cells[style].append(line)
        for name, reasons in (row.metrics.get("undefined") or {}).items():
            undefined.extend(f"{row.name}: {name}/{metric}: {reason}" for metric, reason in reasons.items()
                             if (name, metric) in columns)
        skipped.extend(f"{row.name}: {group}: {reason}" for group, reason in (row.metrics.get("skipped") or {}).items())
    return Table(header, cells, undefined, skipped)


# -- writers --------------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """``text`` safe in LaTeX; ↑ / ↓ / ∞ become math symbols."""
    if text == r"$\infty$":
        return text
    escaped = "".join(_TEX_SPECIALS.get(c, c) for c in text)
    return escaped.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("∞", r"$\infty$")


def write_markdown(path: Path, table: Table, rows: Sequence[RunRow], out_dir: Path) -> None:
    lines = ["# Anonymization report", "",
             f"{len(rows)} run(s). Columns: differing settings, then `<class>/<metric>` with ↑ = higher is better, "
             "↓ = lower is better (no arrow: a reference value). `all` pools every class. — = undefined "
             "(reasons below), ∞ = identical pixels.", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---:" if "/" in h else "---" for h in table.header) + "|")
    lines.extend("| " + " | ".join(_md_escape(c) for c in line) + " |" for line in table.cells["md"])
    used = [m for m in METRICS if any(h.split("/", 1)[-1].split(" ")[0] == m for h in table.header[2:])]
    if used:
        lines += ["", "## Metrics", ""]
        lines += [f"- `{m}` {METRICS[m].arrow} ({METRICS[m].unit or 'no unit'}): {METRICS[m].description}."
                  for m in used]
    if table.skipped:
        lines += ["", "## Skipped metrics", ""] + [f"- {_md_escape(s)}" for s in table.skipped]
    if table.undefined:
        lines += ["", "## Undefined values", ""] + [f"- {_md_escape(s)}" for s in table.undefined]
    pictures = [(row, name, picture) for row in rows for name, picture in row.pictures.items()]
    if pictures:
        lines += ["", "## Pictures (original | anonymized | mask)", ""]
        for row, name, picture in pictures:
            lines.append(f"**{row.name} — {name}**  ")
            lines.append(f"![{row.name} {name}]({picture.relative_to(out_dir).as_posix()})")
            lines.append("")
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def write_csv(path: Path, table: Table) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(table.header)
        writer.writerows(table.cells["csv"])


def write_tex(path: Path, table: Table) -> None:
    spec = "".join("r" if "/" in h else "l" for h in table.header)
    lines = ["% Generated by python -m evaluation.report; needs \\usepackage{booktabs,graphicx}.",
             "\\begin{table}[t]", "\\centering", "\\resizebox{\\linewidth}{!}{%",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(tex_escape(h) for h in table.header) + " \\\\", "\\midrule"]
    lines += [" & ".join(tex_escape(c) for c in line) + " \\\\" for line in table.cells["tex"]]
    lines += ["\\bottomrule", "\\end{tabular}}",
              "\\caption{Per-class metrics ($\\uparrow$ higher is better, $\\downarrow$ lower is better).}",
              "\\end{table}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- pictures -------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _panel(image: np.ndarray, box: tuple[int, int, int, int]) -> Any:
    from PIL import Image

    x1, y1, x2, y2 = box
    crop = Image.fromarray(np.ascontiguousarray(image[y1:y2, x1:x2]))
    width = max(1, round(crop.width * PICTURE_HEIGHT / crop.height))
    return crop.resize((width, PICTURE_HEIGHT), Image.Resampling.BILINEAR)


def make_pictures(row: RunRow, out_dir: Path) -> None:
    """Write original | anonymized | mask pictures of each class of ``row`` (from metrics.json ``examples``)
    into ``out_dir/images``; a run whose videos cannot be read gets none (its status says why)."""
    from PIL import Image

    from inpaint_anon.evaluate import iter_frames, load_run
    from inpaint_anon.metrics.crops import square_crop_box

    examples = {name: e for name, e in (row.metrics.get("examples") or {}).items() if name != "all"}
    if not examples:
        return
    try:
        run = load_run(row.path)
        wanted = {int(e["frame"]) for e in examples.values()}
        frames = {}
        for index, original, anonymized, detections in iter_frames(run):
            if index in wanted:
                frames[index] = (original, anonymized, detections)
            if index >= max(wanted):
                break
    except InpaintAnonError as error:
        row.status += f"; no pictures: {error}"
        return
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for name, example in sorted(examples.items()):
        if int(example["frame"]) not in frames:
            continue
        original, anonymized, detections = frames[int(example["frame"])]
        height, width = original.shape[:2]
        box = square_crop_box(tuple(int(v) for v in example["box"]), height, width, PICTURE_PADDING)
        mask = detections.by_class(name).union_mask().numpy()
        mask_rgb = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        panels = [_panel(image, box) for image in (original, anonymized, mask_rgb)]
        gap = 4
        canvas = Image.new("RGB", (sum(p.width for p in panels) + gap * 2, PICTURE_HEIGHT), (255, 255, 255))
        x = 0
        for panel in panels:
            canvas.paste(panel, (x, 0))
            x += panel.width + gap
        path = out_dir / "images" / f"{_slug(row.name)}__{_slug(name)}.png"
        canvas.save(path)
        row.pictures[name] = path


# -- command line ---------------------------------------------------------------------------------------------


class _Usage(Exception):
    """A bad command line (argparse would print its usage and exit; we print one error line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m evaluation.report",
                     description="Turn run folders (or sweep folders) into report.md/.csv/.tex.")
    parser.add_argument("paths", nargs="+", help="run folders and/or sweep folders")
    parser.add_argument("--out", required=True, help="folder for report.md, report.csv, report.tex, images/")
    parser.add_argument("--evaluate", action="store_true", help="evaluate runs that have no metrics.json first")
    parser.add_argument("--classes", help="comma-separated classes to show (default: all found)")
    parser.add_argument("--metrics", help="comma-separated metrics to show (default: all found)")
    parser.add_argument("--no-images", action="store_true", help="skip the pictures")
    return parser


def report(paths: Sequence[str | Path], out: str | Path, *, evaluate: bool = False,
           classes: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
           images: bool = True) -> dict[str, Path]:
    """Write the report of ``paths`` into ``out``; returns {"md", "csv", "tex"} -> path."""
    unknown = [m for m in metrics or () if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    out_dir = Path(out).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = load_rows(find_runs(paths), evaluate=evaluate)
    if images:
        for row in rows:
            if row.metrics:
                make_pictures(row, out_dir)
    table = build_table(rows, classes, metrics)
    written = {"md": out_dir / "report.md", "csv": out_dir / "report.csv", "tex": out_dir / "report.tex"}
    write_markdown(written["md"], table, rows, out_dir)
    write_csv(written["csv"], table)
    write_tex(written["tex"], table)
    return written


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evaluation.report``; returns the exit code (0, or 2 after one ``error:`` line)."""
    try:
        args = _parser().parse_args(argv)
        written = report(args.paths, args.out, evaluate=args.evaluate, classes=_names(args.classes),
                         metrics=_names(args.metrics), images=not args.no_images)
    except _Usage as error:
        print(f"error: {error}; see python -m evaluation.report --help", file=sys.stderr)
        return 2
    except InpaintAnonError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
