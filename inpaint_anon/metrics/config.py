"""What an evaluation measures and how: :class:`MetricsConfig`, and :data:`METRICS`, the table of metric names,
directions and definitions that ``metrics.json`` and the reports carry.

The config is a plain frozen dataclass, built from keyword arguments (Hydra's ``_target_``, from the run and
evaluate command lines) or from a dict (:meth:`MetricsConfig.from_dict`, e.g. ``run.json``'s resolved
``config.metrics``). Every value is checked where it enters and a bad one raises
:class:`~inpaint_anon.errors.ConfigError` naming ``metrics.<key>`` and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inpaint_anon.checks import check_bool
from inpaint_anon.errors import ConfigError

LPIPS_NETS = ("alex", "vgg", "squeeze")
FID_FEATURES = (64, 192, 768, 2048)
METRIC_GROUPS = ("psnr", "ssim", "lpips", "fid", "flicker", "leak")
"""The switches of :class:`MetricsConfig`; each turns on the metrics listed in :data:`GROUP_METRICS`."""


@dataclass(frozen=True)
class MetricInfo:
    """How to read one reported number.

    direction: ``"higher"`` (↑ is better for an anonymizer), ``"lower"`` (↓) or ``""`` (a reference value with no
    better side). unit: ``"dB"``, ``"levels"`` (0-255 RGB levels), ``"fraction"`` or ``""``.
    description: one sentence for the report's legend.
    """

    direction: str
    unit: str
    description: str

    @property
    def arrow(self) -> str:
        """``"↑"``, ``"↓"`` or ``""``."""
        return {"higher": "↑", "lower": "↓"}.get(self.direction, "")


METRICS: dict[str, MetricInfo] = {
    "psnr_out": MetricInfo(
        "higher", "dB",
        "PSNR outside every mask of the frame (pooled MSE over those pixels and frames, RGB, peak 255): how well "
        "the rest of the frame is preserved; per class: over the frames in which that class appears"),
    "ssim_out": MetricInfo(
        "higher", "",
        "SSIM (Gaussian 11x11, sigma 1.5, RGB) map averaged over pixels outside every mask of the frame; per "
        "class: over the frames in which that class appears"),
    "psnr_in": MetricInfo(
        "lower", "dB",
        "PSNR inside the class's masks; HIGH = the region was NOT changed (identity may survive); reported to "
        "check that regions were replaced, not as a quality score"),
    "ssim_in": MetricInfo(
        "lower", "",
        "SSIM map averaged inside the class's masks; near 1 = the region was NOT changed"),
    "lpips": MetricInfo(
        "higher", "",
        "LPIPS between original and anonymized square crops around each region (resized to crop_size): "
        "perceptual change of the region; higher = changed more"),
    "fid": MetricInfo(
        "lower", "",
        "FID (InceptionV3 pool features) between crops of the original regions and crops of the anonymized "
        "regions: how real the regenerated regions look; null when there are too few crops"),
    "flicker": MetricInfo(
        "lower", "levels",
        "temporal flicker of the anonymized video: mean |change| (0-255 RGB levels) between consecutive frames "
        "of the same track inside its mask, after shifting by the mask-box centre motion"),
    "flicker_orig": MetricInfo(
        "", "levels", "the same flicker measured on the original video (the object's own change): the reference"),
    "flicker_ratio": MetricInfo(
        "lower", "",
        "flicker / flicker_orig: 1 = the anonymized region changes between frames as much as the real object"),
    "leak_rate": MetricInfo(
        "lower", "fraction",
        "fraction of annotated regions left recognisably unchanged (more than leak_fraction of their pixels "
        "within leak_tolerance of the original; leak_fraction_box for box annotations)"),
    "leak_pixels": MetricInfo(
        "lower", "fraction", "mean fraction of an annotated region's pixels within leak_tolerance of the original"),
}
"""Every metric name reported per class, in report column order."""

GROUP_METRICS: dict[str, tuple[str, ...]] = {
    "psnr": ("psnr_out", "psnr_in"),
    "ssim": ("ssim_out", "ssim_in"),
    "lpips": ("lpips",),
    "fid": ("fid",),
    "flicker": ("flicker", "flicker_orig", "flicker_ratio"),
    "leak": ("leak_rate", "leak_pixels"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass(frozen=True)
class MetricsConfig:
    """Settings of an evaluation (``conf/metrics/default.yaml``; keys are ``metrics.<name>`` on command lines).

    Switches (bool): psnr, ssim, lpips, fid, flicker, leak — which metric groups run. ``leak`` also needs
    ``annotations``; ``flicker`` needs track ids in the run's detections.

    frame_stride: evaluate PSNR/SSIM/LPIPS/FID on frames whose index is a multiple of this (>= 1); flicker uses
        the pair (k - 1, k) for those frames k; leak uses every annotated frame.
    outside_margin: pixels (Chebyshev distance) around the union of a frame's masks that are left out of
        ``*_out`` (0 = every pixel outside the masks; the compositor's dilated/feathered ring then counts).
    crop_size: side in pixels of the square crops given to LPIPS and FID (>= 16).
    crop_padding: the crop's side is ``max(box w, box h) * (1 + crop_padding)`` around the mask box centre.
    min_crop_side: regions whose mask box is smaller than this on its longer side (px) get no crop.
    batch_size: crops per LPIPS / Inception call.
    lpips_net: ``alex`` | ``vgg`` | ``squeeze`` (the LPIPS backbone; its calibrated linear layers ship with lpips).
    lpips_weights: local torchvision ImageNet state dict of that backbone (e.g. ``alexnet-owt-7be5be79.pth``);
        None = torch's hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded there when ``download``.
    fid_features: InceptionV3 feature size (64, 192, 768, 2048: the standard FID uses 2048).
    fid_weights: local FID InceptionV3 weights (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``);
        None = the hub cache, downloaded there when ``download``.
    fid_min_crops: FID is reported as null (with the reason) when either side has fewer crops (>= 2).
    fid_stats_dir: folder where the original-side FID statistics are saved and reused across runs of the same
        input, detections and crop settings; None = not saved.
    download: allow fetching missing backbone weights into the hub cache (False = fail at once when uncached).
    annotations: ground-truth file for the leak rate (JSON lines, see :mod:`inpaint_anon.metrics.leak`).
    leak_tolerance: RGB levels (0-255, max over channels) within which a pixel counts as unchanged.
    leak_fraction, leak_fraction_box: a mask / box annotation leaks when more than this fraction of its pixels
        are unchanged (boxes hold background that is rightly left unchanged, hence the higher default).
    device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` for the LPIPS and Inception networks.
    """

    psnr: bool = True
    ssim: bool = True
    lpips: bool = True
    fid: bool = True
    flicker: bool = True
    leak: bool = True
    frame_stride: int = 1
    outside_margin: int = 0
    crop_size: int = 128
    crop_padding: float = 0.1
    min_crop_side: int = 16
    batch_size: int = 16
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    fid_features: int = 2048
    fid_weights: str | None = None
    fid_min_crops: int = 50
    fid_stats_dir: str | None = None
    download: bool = True
    annotations: str | None = None
    leak_tolerance: int = 8
    leak_fraction: float = 0.5
    leak_fraction_box: float = 0.8
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in (*METRIC_GROUPS, "download"):
            check_bool(f"metrics.{name}", getattr(self, name))
        for name, low in (("frame_stride", 1), ("outside_margin", 0), ("crop_size", 16), ("min_crop_side", 1),
                          ("batch_size", 1), ("fid_min_crops", 2)):
            value = getattr(self, name)
            self._check(name, _is_int(value) and value >= low, f"an integer >= {low}")
        tolerance = self.leak_tolerance
        self._check("leak_tolerance", _is_int(tolerance) and 0 <= tolerance <= 255, "an integer 0..255")
        self._check("crop_padding", _is_number(self.crop_padding) and self.crop_padding >= 0, "a number >= 0")
        for name in ("leak_fraction", "leak_fraction_box"):
            value = getattr(self, name)
            self._check(name, _is_number(value) and 0 <= value < 1, "a number in [0, 1)")
        self._check("lpips_net", self.lpips_net in LPIPS_NETS, f"one of {', '.join(LPIPS_NETS)}")
        self._check("fid_features", self.fid_features in FID_FEATURES and _is_int(self.fid_features),
                    f"one of {', '.join(map(str, FID_FEATURES))}")
        for name in ("lpips_weights", "fid_weights", "fid_stats_dir", "annotations"):
            value = getattr(self, name)
            self._check(name, value is None or (isinstance(value, str) and value != ""), "a path or null")
        self._check("device", isinstance(self.device, str) and self.device != "", "auto, cpu, cuda or cuda:N")

    def _check(self, name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ConfigError(f"metrics.{name}={getattr(self, name)!r} is invalid; use {expected}")

    @property
    def enabled_groups(self) -> tuple[str, ...]:
        """The switched-on metric groups, in :data:`METRIC_GROUPS` order."""
        return tuple(name for name in METRIC_GROUPS if getattr(self, name))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MetricsConfig:
        """A config from a mapping of field values (``_target_`` is ignored); ConfigError on an unknown key."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(f"metrics config {values!r} is not a mapping; give key: value pairs")
        known = cls.field_names()
        unknown = sorted(k for k in values if k != "_target_" and k not in known)
        if unknown:
            raise ConfigError(f"unknown metrics option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**{k: v for k, v in values.items() if k != "_target_"})

    def replace(self, **changes: Any) -> MetricsConfig:
        """A copy with some fields changed (checked like the constructor)."""
        known = self.field_names()
        unknown = sorted(k for k in changes if k not in known)
        if unknown:
            raise ConfigError(f"unknown metrics option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

