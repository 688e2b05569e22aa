"""deface's own face boxes, frame by frame, as JSON: run by the python of deface's virtual environment.

    experiments/bench/deface-venv/bin/python evaluation/bench/deface_boxes.py CLIP OUT.json [--thresh 0.2]

Reads ``CLIP`` and runs ``deface.centerface.CenterFace`` exactly as ``deface CLIP`` does at its defaults
(``deface/deface.py``: ``imageio.get_reader(CLIP).iter_data()`` for the frames, ``CenterFace(in_shape=None,
backend=...)``, ``centerface(frame, threshold=...)``), and writes ``{"deface": version, "threshold": t,
"backend": b, "frames": [[[x1, y1, x2, y2, score], ...] per frame]}`` in frame pixels (deface's boxes before
its ``--mask-scale`` growth). Imports nothing from inpaint_anon (deface's venv does not have it).
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    import imageio
    from deface import __version__
    from deface.centerface import CenterFace

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip")
    parser.add_argument("out")
    parser.add_argument("--thresh", type=float, default=0.2, help="deface's --thresh (its default 0.2)")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxrt", "opencv"])
    args = parser.parse_args()

    centerface = CenterFace(in_shape=None, backend=args.backend)
    reader = imageio.get_reader(args.clip)
    frames = []
    for frame in reader.iter_data():
        dets, _ = centerface(frame, threshold=args.thresh)
        frames.append([[round(float(v), 3) for v in det] for det in dets])
    reader.close()
    partial = f"{args.out}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump({"deface": __version__, "threshold": args.thresh, "backend": centerface.backend,
                   "frames": frames}, file)
    os.replace(partial, args.out)


if __name__ == "__main__":
    main()
