"""Per-class evaluation of an anonymization run: original vs anonymized video, inside and outside the run's masks.

- :class:`MetricsConfig` (``conf/metrics/default.yaml``) and :data:`METRICS` (names, directions, definitions);
- pixel metrics :class:`MaskedPSNR`, :class:`MaskedSSIM` (+ :func:`masked_psnr`, :func:`masked_ssim`);
- crop metrics: LPIPS (:func:`load_lpips`) and per-class FID (:mod:`inpaint_anon.metrics.fid`);
- :class:`TemporalFlicker` (motion-compensated, with the original as reference), :class:`LeakRate`
  (ground-truth annotations, :func:`load_annotations`);
- :class:`RunEvaluator`, which routes every frame's regions to per-class rows of mergeable torchmetrics states.

:func:`inpaint_anon.evaluate.evaluate_run` streams a run folder through it and writes ``metrics.json``.
"""

from inpaint_anon.metrics.config import METRICS, MetricInfo, MetricsConfig
from inpaint_anon.metrics.evaluator import ALL, RunEvaluator
from inpaint_anon.metrics.leak import Annotation, LeakRate, load_annotations
from inpaint_anon.metrics.networks import FeatureExtractor, load_inception, load_lpips
from inpaint_anon.metrics.pixel import MaskedPSNR, MaskedSSIM, masked_psnr, masked_ssim, ssim_map
from inpaint_anon.metrics.temporal import TemporalFlicker

__all__ = [
    "ALL",
    "METRICS",
    "Annotation",
    "FeatureExtractor",
    "LeakRate",
    "MaskedPSNR",
    "MaskedSSIM",
    "MetricInfo",
    "MetricsConfig",
    "RunEvaluator",
    "TemporalFlicker",
    "load_annotations",
    "load_inception",
    "load_lpips",
    "masked_psnr",
    "masked_ssim",
    "ssim_map",
]
