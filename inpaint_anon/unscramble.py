"""Undo a keyed scramble: ``python -m inpaint_anon.unscramble run_dir=RUN output=RESTORED.mkv``.

A run with ``inpainter=scramble`` leaves three public things: the scrambled video (lossless, FFV1 in .mkv), its
run folder's ``run.json`` (the nonce and the key fingerprint) and ``scrambled_pixels.dets`` (the exact pixels
scrambled in each frame, with a keyed tag). With the secret key they give back the original pixels, bit for bit,
inside the scrambled regions (everything else was never changed).

Command line (a Hydra entry point, ``conf/unscramble.yaml``; it writes no run folder and no log file)::

    INPAINT_ANON_KEY=<hex> python -m inpaint_anon.unscramble run_dir=RUN output=RESTORED.mkv
    python -m inpaint_anon.unscramble run_dir=RUN output=RESTORED.mkv key_file=~/keys/street.key [input=VIDEO]

``input`` is the scrambled video (default: run.json's ``output``, looked up from the current folder, then from
each folder above the run folder); ``key_file`` is read when given, else ``$INPAINT_ANON_KEY``. The output is
written losslessly (``video.codec=ffv1``, a .mkv output; ``video.codec=libx264`` for an .mp4 to watch, which is
no longer exact), audio copied, through a partial file renamed at the end. A wrong key is found with the keyed
tag before anything is written: one ``error:`` line, exit code 2, no output file. The output path is the last
line printed.

Python: :func:`unscramble_video` (no Hydra).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from inpaint_anon.checks import check_bool
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.scramble import (
    KEY_ENV,
    PIXELS_FILE,
    ScrambledPixels,
    key_bytes,
    read_key_file,
    unscramble,
    video_key,
)
from inpaint_anon.video import VideoReader, VideoWriter


def unscramble_video(
    scrambled: str | Path,
    pixels: str | Path | ScrambledPixels,
    output: str | Path,
    key: str | bytes,
    *,
    codec: str = "ffv1",
    crf: int = 18,
    preset: str = "medium",
    overwrite: bool = False,
    keep_metadata: bool = False,
) -> Path:
    """Restore the original pixels of a scrambled video into ``output``; returns ``Path(output)``.

    scrambled: the scrambled video (or still). pixels: its record of scrambled pixel sets
    (``<run>/scrambled_pixels.dets``) or a :class:`ScrambledPixels`. key: the secret it was scrambled with.
    codec, crf, preset, overwrite, keep_metadata: as for :class:`~inpaint_anon.video.VideoWriter` (``ffv1``
    needs a .mkv output; any other codec loses the exactness).

    1. open the record and check the key with its keyed tag (InputError on a wrong key, before any output);
    2. stream the scrambled frames and the recorded pixel sets together, frame by frame;
    3. unscramble each frame's set with the per-video key and write it (audio and timestamps copied);
    4. check that video and record have the same frames; the output appears only when all of it is written.
    """
    record = pixels if isinstance(pixels, ScrambledPixels) else ScrambledPixels(pixels)
    record.check_key(key)
    secret = video_key(key, record.nonce)
    with VideoReader(scrambled) as reader:
        meta = reader.meta
        if (meta.height, meta.width) != (record.height, record.width):
            raise InputError(
                f"{scrambled} is {meta.width}x{meta.height} but {record.path.name} records {record.width}x"
                f"{record.height} frames; give the video that run scrambled (input=)"
            )
        with VideoWriter(output, meta, source=scrambled, codec=codec, crf=crf, preset=preset,
                         keep_metadata=keep_metadata, overwrite=overwrite) as writer:
            masks = iter(record)
            for frame in reader:
                index, mask = next(masks, (None, None))
                if mask is None or index != frame.index:
                    raise InputError(f"{scrambled} has more frames than the {record.n_frames} recorded in "
                                     f"{record.path}; give the video that run scrambled (input=)")
                rgb = unscramble(frame.rgb, mask.numpy(), secret, frame.index, record.hide_colors)
                writer.write(replace(frame, rgb=rgb))
            if writer.frames_written != record.n_frames:
                raise InputError(f"{scrambled} has {writer.frames_written} frames but {record.path} records "
                                 f"{record.n_frames}; give the video that run scrambled (input=)")
    return Path(output)


def _scrambled_video(value: Any, run_dir: Path) -> Path:
    """The scrambled video named by run.json's ``output``: as given (absolute, or from the current folder), else
    relative to a folder above the run folder (runs write under ``<root>/experiments/...``)."""
    if not isinstance(value, str) or not value:
        raise InputError(f"run {run_dir}: run.json names no output video; pass input=PATH")
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(folder / path for folder in run_dir.resolve().parents)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"scrambled video {value} (run.json's output) not found; pass input=PATH")


def _run_facts(run_dir: Path) -> dict[str, Any]:
    """run.json of a scrambling run (InputError when missing, unreadable or not a scramble run)."""
    path = run_dir / "run.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no run.json in {run_dir}; pass the run folder of an inpainter=scramble run") from None
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} ({error}); pass the run folder of an inpainter=scramble run") from None
    if not isinstance(record, dict) or not isinstance(record.get("scramble"), dict):
        inpainter = record.get("inpainter") if isinstance(record, dict) else None
        raise InputError(f"run {run_dir} did not scramble (inpainter {inpainter!r}): nothing to undo; pass the "
                         "run folder of an inpainter=scramble run")
    return record


def _key(key_file: str | None) -> str:
    """The key from ``key_file``, else from ``$INPAINT_ANON_KEY`` (ConfigError when neither is given)."""
    if key_file is not None:
        return read_key_file(key_file)
    key = os.environ.get(KEY_ENV)
    if not key:
        raise ConfigError(f"no scramble key given; set ${KEY_ENV} or pass key_file=PATH")
    key_bytes(key)
    return key


def _mandatory(cfg: DictConfig, name: str, fix: str) -> Path:
    try:
        value = cfg[name]
    except MissingMandatoryValue:
        raise ConfigError(f"no {name} given; pass {fix}") from None
    return Path(str(value)).expanduser()


def run(cfg: DictConfig) -> Path:
    """One unscramble from a composed ``conf/unscramble.yaml``; returns the output path."""
    overwrite = check_bool("overwrite", cfg.overwrite)
    keep_metadata = check_bool("keep_metadata", cfg.keep_metadata)
    run_dir = _mandatory(cfg, "run_dir", "run_dir=PATH (the run folder of an inpainter=scramble run)")
    output = _mandatory(cfg, "output", "output=PATH.mkv")
    facts = _run_facts(run_dir)
    key = _key(cfg.key_file)
    pixels = ScrambledPixels(run_dir / PIXELS_FILE)
    if pixels.nonce != facts["scramble"].get("nonce"):
        raise InputError(f"{pixels.path} and run.json of {run_dir} name different nonces; use an untouched run folder")
    pixels.check_key(key)
    scrambled = (Path(str(cfg.input)).expanduser() if cfg.input is not None
                 else _scrambled_video(facts.get("output"), run_dir))
    if facts["scramble"].get("lossless_output") is False:
        print(f"warning: run {run_dir} wrote a lossy output (inpainter.allow_lossy=true): the restored pixels are "
              "only approximate", file=sys.stderr, flush=True)
    return unscramble_video(scrambled, pixels, output, key, overwrite=overwrite,
                            keep_metadata=keep_metadata, **cfg.video)


@hydra.main(version_base="1.3", config_path="conf", config_name="unscramble")
def _hydra_main(cfg: DictConfig) -> None:
    print(run(cfg), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inpaint_anon.unscramble KEY=VALUE...`` / ``inpaint-anon unscramble``; returns the exit code (0,
    2 after one ``error:`` line, 128 + signal after an ``interrupted:`` line). ``argv``: the arguments after the
    program name (default ``sys.argv[1:]``)."""
    from inpaint_anon.run import hydra_command

    return hydra_command(_hydra_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
