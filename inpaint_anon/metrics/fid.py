"""Per-class FID: one ``torchmetrics`` FrechetInceptionDistance state per class, fed precomputed features, and
a store that keeps the original-side statistics of a video for reuse by every run over it.

The FID of a class compares the InceptionV3 features of the crops of its regions in the original video
("real") with those of the same crops in the anonymized video ("fake"): ``|mu_r - mu_f|^2 + tr(S_r + S_f -
2 (S_r S_f)^(1/2))`` with unbiased covariances, as torchmetrics computes it from summed features (states
``real_features_sum`` (D,), ``real_features_cov_sum`` (D, D), ``real_features_num_samples`` and the same for
``fake``; float64, summed when merged). With fewer than ``fid_min_crops`` crops on either side the value is
reported as null with the reason: FID is biased upwards at small sample counts (and undefined below 2).

The real side depends only on the input video, the run's detections (which regions are cropped), the crop
settings and the feature network, so :class:`RealStatsStore` saves it under a key made of all of them and a
later run over the same video and detections loads it instead of running Inception on the original crops.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from inpaint_anon.atomic import AtomicPath
from inpaint_anon.errors import ConfigError
from inpaint_anon.metrics.networks import PrecomputedFeatures

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
FAKE_STATES = ("fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples")
STATS_FORMAT = "inpaint_anon.fid_real/1"


def new_fid(num_features: int) -> FrechetInceptionDistance:
    """An empty torchmetrics FID state for features of size ``num_features``, fed with
    ``fid.update(features float (N, D), real=...)``."""
    return FrechetInceptionDistance(feature=PrecomputedFeatures(num_features), reset_real_features=True)


def sample_counts(fid: FrechetInceptionDistance) -> tuple[int, int]:
    """(real, fake) feature counts of a FID state."""
    return int(fid.real_features_num_samples), int(fid.fake_features_num_samples)


def fid_value(fid: FrechetInceptionDistance, min_crops: int) -> tuple[float | None, str | None]:
    """(FID, None), or (None, reason) when either side has fewer than ``min_crops`` (>= 2) crops."""
    n_real, n_fake = sample_counts(fid)
    minimum = max(2, min_crops)
    if n_real < minimum or n_fake < minimum:
        return None, (f"only {n_real} original / {n_fake} anonymized crops, fewer than "
                      f"metrics.fid_min_crops={min_crops}")
    value = float(fid.compute())
    if not math.isfinite(value):
        return None, f"FID is not finite ({value}) for {n_real} / {n_fake} crops"
    return max(value, 0.0), None


def real_state(fid: FrechetInceptionDistance) -> dict[str, torch.Tensor]:
    """The real-side states of a FID state, detached copies."""
    return {name: getattr(fid, name).detach().clone() for name in REAL_STATES}


def set_real_state(fid: FrechetInceptionDistance, state: Mapping[str, torch.Tensor]) -> None:
    """Replace the real-side states of ``fid`` (e.g. with statistics loaded from a :class:`RealStatsStore`)."""
    for name in REAL_STATES:
        current = getattr(fid, name)
        value = state[name]
        if value.shape != current.shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
        setattr(fid, name, value.to(current.dtype).clone())


def merge_fid(target: FrechetInceptionDistance, incoming: FrechetInceptionDistance, *, real: bool = True) -> None:
    """Add ``incoming``'s states to ``target`` (``merge_state``); ``real=False`` adds only the fake side (both
    sides hold the same loaded real statistics, which must not be counted twice)."""
    state = dict(incoming.metric_state)
    if not real:
        state.update({name: torch.zeros_like(getattr(target, name)) for name in REAL_STATES})
    target.merge_state(state)


def masks_digest(frames: Any) -> str:
    """SHA-256 of a run's regions: every frame's index, size, class names and mask bits, in order.

    frames: iterable of (index, Detections), e.g. a :class:`~inpaint_anon.records.DetectionReader`."""
    digest = hashlib.sha256(b"inpaint_anon.masks/1;")
    for index, detections in frames:
        masks = detections.masks.cpu().numpy()
        digest.update(f"{index}:{masks.shape}:{','.join(detections.class_names)};".encode())
        digest.update(np.packbits(masks, axis=None).tobytes())
    return digest.hexdigest()


class RealStatsStore:
    """Original-side FID statistics saved in ``folder``, one file per class:
    ``fid_real_<32 hex digits>.pt`` (a torch file of plain tensors and the key record as JSON text, read with
    ``weights_only=True``), named by a digest of ``key`` (input video, detections, crop settings, feature
    network) and the class name. A file whose stored key differs is ignored.

    folder: created when missing (ConfigError when it cannot be)."""

    def __init__(self, folder: str | Path, key: Mapping[str, Any]) -> None:
        self.folder = Path(folder).expanduser()
        self.key = dict(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"metrics.fid_stats_dir={str(folder)!r} cannot be used ({error.strerror or error}); "
                              "give a writable folder or null") from error

    def _record(self, class_name: str) -> str:
        return json.dumps({"format": STATS_FORMAT, **self.key, "class": class_name}, sort_keys=True)

    def path(self, class_name: str) -> Path:
        digest = hashlib.sha256(self._record(class_name).encode()).hexdigest()[:32]
        return self.folder / f"fid_real_{digest}.pt"

    def load(self, class_name: str) -> dict[str, torch.Tensor] | None:
        """The saved real states of ``class_name``, or None when there is no usable file."""
        path = self.path(class_name)
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data.get("key") != self._record(class_name):
                return None
            return {name: data[name] for name in REAL_STATES}
        except Exception:  # noqa: BLE001 - a damaged file is recomputed and rewritten
            return None

    def save(self, class_name: str, state: Mapping[str, torch.Tensor]) -> Path:
        """Write the real states of ``class_name`` (atomically: temporary file, then rename)."""
        path = self.path(class_name)
        with AtomicPath(path) as out:
            torch.save({"key": self._record(class_name), **{name: state[name] for name in REAL_STATES}}, out.temp)
        return path
