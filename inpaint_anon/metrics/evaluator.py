"""RunEvaluator: every metric of a run, per class, accumulated frame by frame from streamed inputs.

Rows are the class names found in the run's detections (and in the leak annotations), plus ``"all"``:

- ``psnr_out`` / ``ssim_out``: pixels outside every mask of the frame (:func:`~inpaint_anon.metrics.pixel.
  outside_region`); the row of a class pools the frames in which that class has a region, ``all`` pools every
  evaluated frame (frames without regions included: the whole frame is "outside").
- ``psnr_in`` / ``ssim_in``: pixels of the union of the class's masks in the frame (``all``: of every mask).
- ``lpips`` / ``fid``: one square crop per region (:mod:`~inpaint_anon.metrics.crops`), routed to its class row
  and to ``all``; one network pass per crop serves both.
- ``flicker*``: pairs of consecutive frames of one track id (:mod:`~inpaint_anon.metrics.temporal`).
- ``leak_*``: annotated regions (:mod:`~inpaint_anon.metrics.leak`), by their annotated class.

Every row holds torchmetrics states (sums and counts, declared with ``add_state(..., dist_reduce_fx="sum")``),
so two evaluators over disjoint frame ranges of one run :meth:`merge` into exactly the result of one pass. A
range that does not start at frame 0 gets its previous frame with :meth:`set_context`, so the temporal pair that
straddles the split is counted once, by the later range.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.image.fid import FrechetInceptionDistance

from inpaint_anon.errors import WeightsError
from inpaint_anon.metrics.config import GROUP_METRICS, METRIC_GROUPS, METRICS, MetricsConfig
from inpaint_anon.metrics.crops import resize_crops, square_crop_box
from inpaint_anon.metrics.fid import REAL_STATES, fid_value, merge_fid, new_fid, real_state, set_real_state
from inpaint_anon.metrics.leak import Annotation, LeakRate, unchanged_fraction
from inpaint_anon.metrics.networks import FeatureExtractor, LPIPSScorer
from inpaint_anon.metrics.pixel import (
    MaskedPSNR,
    MaskedSSIM,
    outside_region,
    squared_error_map,
    ssim_map,
)
from inpaint_anon.metrics.temporal import TemporalFlicker, track_pair_change
from inpaint_anon.types import Detections, mask_box

ALL = "all"
"""The row that pools every class."""

COUNT_NAMES = ("frames", "regions", "crops", "small_regions", "track_pairs", "annotated")


class Counts(Metric):
    """Bookkeeping of a row, int64 sum states: ``frames`` (frames with a region of the class; ``all``: every
    frame), ``regions``, ``crops`` (regions cropped for LPIPS/FID), ``small_regions`` (too small to crop),
    ``track_pairs`` (consecutive-frame pairs of one track), ``annotated`` (ground-truth regions).
    ``update(**increments)``; ``compute()`` -> dict name -> int Tensor."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in COUNT_NAMES:
            self.add_state(name, torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, **increments: int) -> None:
        for name, value in increments.items():
            setattr(self, name, getattr(self, name) + int(value))

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in COUNT_NAMES}

    def as_ints(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNT_NAMES}


def merge_metric(target: Metric, incoming: Metric | Mapping[str, torch.Tensor]) -> None:
    """``target.merge_state(incoming)`` that also forgets a cached ``compute`` result and counts updates."""
    target.merge_state(incoming)
    if isinstance(incoming, Metric):
        target._update_count += incoming._update_count
    target._computed = None


@dataclass
class _Row:
    """The metric states of one row (a class, or ``all``)."""

    psnr_out: MaskedPSNR
    ssim_out: MaskedSSIM
    psnr_in: MaskedPSNR
    ssim_in: MaskedSSIM
    lpips: MeanMetric
    fid: FrechetInceptionDistance | None
    flicker: TemporalFlicker
    leak: LeakRate
    counts: Counts
    real_cached: bool = False

    def metrics(self) -> dict[str, Metric]:
        found = {name: getattr(self, name) for name in
                 ("psnr_out", "ssim_out", "psnr_in", "ssim_in", "lpips", "flicker", "leak", "counts")}
        if self.fid is not None:
            found["fid"] = self.fid
        return found


@dataclass
class _FrameMemory:
    """What temporal metrics need of the previous frame."""

    index: int
    original: np.ndarray
    anonymized: np.ndarray
    masks: np.ndarray
    names: list[str]
    track_ids: list[int] | None


class RunEvaluator:
    """Per-class metrics of one run, fed frame by frame (see the module docstring).

    config: what to measure. lpips_model: an ``lpips.LPIPS`` module (None: LPIPS is skipped unless turned off).
    feature_extractor: the FID feature network (None: FID skipped). real_stats: class name -> saved real-side
    FID states (:class:`~inpaint_anon.metrics.fid.RealStatsStore`); those classes' original crops are not
    featurized again. skipped: metric group -> reason, for groups the caller could not set up (missing weights,
    no annotations). device: where the networks run.

    Use :meth:`update` for each frame in order (any start), :meth:`compute` for the results, :meth:`merge` to
    add another evaluator's frames, :meth:`reset` to start over. Use :meth:`from_config` to load the networks.
    """

    def __init__(
        self,
        config: MetricsConfig | None = None,
        *,
        lpips_model: torch.nn.Module | None = None,
        feature_extractor: FeatureExtractor | None = None,
        real_stats: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        skipped: Mapping[str, str] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config if config is not None else MetricsConfig()
        self.skipped: dict[str, str] = {name: "disabled in the config (metrics." + name + "=false)"
                                        for name in METRIC_GROUPS if not getattr(self.config, name)}
        self.skipped.update({k: v for k, v in (skipped or {}).items() if k not in self.skipped})
        self.lpips = LPIPSScorer(lpips_model, device) if lpips_model is not None and self._wants("lpips") else None
        if self._wants("lpips") and self.lpips is None:
            self.skipped["lpips"] = "no LPIPS model was given"
        self.features = feature_extractor if self._wants("fid") else None
        if self._wants("fid") and self.features is None:
            self.skipped["fid"] = "no FID feature extractor was given"
        self.real_stats = {k: dict(v) for k, v in (real_stats or {}).items()}
        self.fid_features = self.features.num_features if self.features is not None else None
        self.reset()

    @classmethod
    def from_config(cls, config: MetricsConfig, *, skipped: Mapping[str, str] | None = None,
                    real_stats: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> RunEvaluator:
        """An evaluator with its networks loaded as ``config`` says; a metric whose weights are unavailable is
        skipped with the WeightsError's message (the other metrics still run)."""
        from inpaint_anon.device import resolve_device
        from inpaint_anon.fingerprints import file_fingerprint
        from inpaint_anon.metrics.networks import FID_INCEPTION_URL, load_inception, load_lpips, resolve_checkpoint

        device = resolve_device(config.device)
        reasons = dict(skipped or {})
        lpips_model = None
        if config.lpips and "lpips" not in reasons:
            try:
                lpips_model = load_lpips(config.lpips_net, config.lpips_weights, download=config.download,
                                         device=device)
            except WeightsError as error:
                reasons["lpips"] = str(error)
        extractor = None
        if config.fid and "fid" not in reasons:
            try:
                model = load_inception(config.fid_features, config.fid_weights, download=config.download,
                                       device=device)
                weights = resolve_checkpoint(FID_INCEPTION_URL, config.fid_weights, metric="FID",
                                             key="metrics.fid_weights", download=False)
                name = f"inception-v3-compat/{config.fid_features}/{file_fingerprint(weights)[:16]}"
                extractor = FeatureExtractor(model, device, name=name)
            except WeightsError as error:
                reasons["fid"] = str(error)
        return cls(config, lpips_model=lpips_model, feature_extractor=extractor, real_stats=real_stats,
                   skipped=reasons, device=device)

    # -- state ---------------------------------------------------------------------------------------------

    def _wants(self, group: str) -> bool:
        return group not in self.skipped

    def reset(self) -> None:
        """Forget every frame (networks and saved real statistics are kept)."""
        self.rows: dict[str, _Row] = {}
        self.examples: dict[str, dict[str, Any]] = {}
        self.saw_tracks = False
        self.frames_seen = 0
        self._previous: _FrameMemory | None = None
        self._pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self._row(ALL)

    def _row(self, name: str) -> _Row:
        row = self.rows.get(name)
        if row is None:
            fid = new_fid(self.fid_features) if self.fid_features is not None else None
            if fid is not None:
                fid.orig_dtype = torch.float32  # torchmetrics sets it on update; a merged-only state needs it too
            lpips_mean = MeanMetric(nan_strategy="error").set_dtype(torch.float64)
            row = _Row(MaskedPSNR(), MaskedSSIM(), MaskedPSNR(), MaskedSSIM(), lpips_mean, fid, TemporalFlicker(),
                       LeakRate(), Counts())
            if fid is not None and name in self.real_stats:
                set_real_state(fid, self.real_stats[name])
                row.real_cached = True
            self.rows[name] = row
        return row

    def load_real_statistics(self, stats: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Use saved real-side FID states (class -> states) for those classes; call before the first update."""
        if self.frames_seen:
            raise RuntimeError("load_real_statistics must be called before the first update")
        self.real_stats = {k: dict(v) for k, v in stats.items()}
        self.reset()

    # -- feeding -------------------------------------------------------------------------------------------

    def update(self, index: int, original: np.ndarray, anonymized: np.ndarray, detections: Detections,
               annotations: Sequence[Annotation] = ()) -> None:
        """Add frame ``index``: ``original`` and ``anonymized`` uint8 (H, W, 3) RGB, the run's ``detections`` of
        that frame (masks at H x W, class names, track ids or None) and its ground-truth ``annotations``.

        The two images are kept (not copied, not modified) until the next call, for the temporal pair."""
        height, width = original.shape[:2]
        if original.shape != anonymized.shape or original.ndim != 3 or original.shape[2] != 3:
            raise ValueError(f"frame {index}: original {original.shape} and anonymized {anonymized.shape} must be "
                             "uint8 (H, W, 3) of one size")
        if (detections.height, detections.width) != (height, width):
            raise ValueError(f"frame {index}: detections are {detections.height}x{detections.width} (HxW), "
                             f"frames {height}x{width}")
        masks = detections.masks.cpu().numpy().astype(bool, copy=False)
        names = detections.class_names
        track_ids = None if detections.track_ids is None else [int(t) for t in detections.track_ids.tolist()]
        self.saw_tracks = self.saw_tracks or track_ids is not None
        self.frames_seen += 1
        present = sorted(set(names))
        self._row(ALL).counts.update(frames=1, regions=len(names))
        for name in present:
            self._row(name).counts.update(frames=1, regions=names.count(name))
        self._note_examples(index, masks, names)
        if index % self.config.frame_stride == 0:
            if self._wants("psnr") or self._wants("ssim"):
                self._pixel_metrics(original, anonymized, masks, names, present)
            if self.lpips is not None or self.features is not None:
                self._add_crops(original, anonymized, masks, names)
            if self._wants("flicker") and self._previous is not None and self._previous.index == index - 1:
                self._flicker(self._previous, original, anonymized, masks, names, track_ids)
        if annotations and self._wants("leak"):
            self._leak(original, anonymized, annotations)
        self._previous = _FrameMemory(index, original, anonymized, masks, names, track_ids)

    def set_context(self, index: int, original: np.ndarray, anonymized: np.ndarray, detections: Detections) -> None:
        """Remember frame ``index`` as the previous frame without measuring it (the frame before a range that
        another evaluator measured), so the pair (index, index + 1) is measured by this one."""
        names = detections.class_names
        track_ids = None if detections.track_ids is None else [int(t) for t in detections.track_ids.tolist()]
        self._previous = _FrameMemory(index, original, anonymized, detections.masks.cpu().numpy().astype(bool),
                                      names, track_ids)

    def _note_examples(self, index: int, masks: np.ndarray, names: list[str]) -> None:
        """Keep, per class, the largest region seen (for the report's pictures)."""
        for i, name in enumerate(names):
            area = int(masks[i].sum())
            box = mask_box(masks[i])
            for row in (name, ALL):
                best = self.examples.get(row)
                if box is not None and (best is None or area > best["area"]):
                    self.examples[row] = {"frame": index, "box": list(box), "area": area, "class": name}

    def _pixel_metrics(self, original: np.ndarray, anonymized: np.ndarray, masks: np.ndarray, names: list[str],
                       present: list[str]) -> None:
        union = masks.any(axis=0) if len(names) else np.zeros(original.shape[:2], dtype=bool)
        outside = outside_region(union, self.config.outside_margin)
        error = squared_error_map(original, anonymized) if self._wants("psnr") else None
        structure = ssim_map(original, anonymized) if self._wants("ssim") else None
        for name in (ALL, *present):
            row = self._row(name)
            inside = union if name == ALL else masks[[n == name for n in names]].any(axis=0)
            if error is not None:
                row.psnr_out.update(error, outside)
                row.psnr_in.update(error, inside)
            if structure is not None:
                row.ssim_out.update(structure, outside)
                row.ssim_in.update(structure, inside)

    def _add_crops(self, original: np.ndarray, anonymized: np.ndarray, masks: np.ndarray, names: list[str]) -> None:
        height, width = original.shape[:2]
        boxes, crop_names = [], []
        for i, name in enumerate(names):
            box = mask_box(masks[i])
            if box is None or max(box[2] - box[0], box[3] - box[1]) < self.config.min_crop_side:
                self._row(name).counts.update(small_regions=1)
                self._row(ALL).counts.update(small_regions=1)
                continue
            boxes.append(square_crop_box(box, height, width, self.config.crop_padding))
            crop_names.append(name)
        if not boxes:
            return
        size = self.config.crop_size
        originals, anonymizeds = resize_crops(original, boxes, size), resize_crops(anonymized, boxes, size)
        self._pending.extend(zip(crop_names, originals, anonymizeds))
        if len(self._pending) >= self.config.batch_size:
            self.flush()

    def flush(self) -> None:
        """Run the networks on the crops collected so far (done automatically every ``batch_size`` crops and
        before :meth:`compute` and :meth:`merge`)."""
        while self._pending:
            batch, self._pending = self._pending[: self.config.batch_size], self._pending[self.config.batch_size:]
            names = [name for name, _, _ in batch]
            originals = torch.stack([o for _, o, _ in batch])
            anonymizeds = torch.stack([a for _, _, a in batch])
            for name in set(names):
                self._row(name).counts.update(crops=names.count(name))
            self._row(ALL).counts.update(crops=len(names))
            if self.lpips is not None:
                self._route(names, self.lpips(originals, anonymizeds), lambda row, values: row.lpips.update(values))
            if self.features is not None:
                self._featurize(names, originals, anonymizeds)

    def _route(self, names: list[str], values: torch.Tensor, add: Any) -> None:
        """``add(row, values_of_that_row)`` for every class present in ``names`` and for ``all``."""
        add(self._row(ALL), values)
        for name in sorted(set(names)):
            add(self._row(name), values[torch.tensor([n == name for n in names])])

    def _featurize(self, names: list[str], originals: torch.Tensor, anonymizeds: torch.Tensor) -> None:
        assert self.features is not None
        self._route(names, self.features(anonymizeds), lambda row, f: row.fid.update(f, real=False))
        all_cached = self._row(ALL).real_cached
        need = torch.tensor([not (self._row(n).real_cached and all_cached) for n in names])
        if not bool(need.any()):
            return
        kept = [n for n, k in zip(names, need.tolist()) if k]
        real = self.features(originals[need])

        def add_real(row: _Row, values: torch.Tensor) -> None:
            if not row.real_cached:
                row.fid.update(values, real=True)

        self._route(kept, real, add_real)

    def _flicker(self, previous: _FrameMemory, original: np.ndarray, anonymized: np.ndarray, masks: np.ndarray,
                 names: list[str], track_ids: list[int] | None) -> None:
        if track_ids is None or previous.track_ids is None:
            return
        earlier = {tid: i for i, tid in enumerate(previous.track_ids)}
        for i, tid in enumerate(track_ids):
            j = earlier.get(tid)
            if j is None or previous.names[j] != names[i]:
                continue
            (anon_sum, orig_sum), pixels = track_pair_change(
                (previous.anonymized, previous.original), (anonymized, original), previous.masks[j], masks[i])
            for row in (self._row(names[i]), self._row(ALL)):
                row.flicker.update(anon_sum, orig_sum, pixels)
                row.counts.update(track_pairs=1)

    def _leak(self, original: np.ndarray, anonymized: np.ndarray, annotations: Sequence[Annotation]) -> None:
        height, width = original.shape[:2]
        for annotation in annotations:
            region = annotation.region(height, width)
            fraction = unchanged_fraction(original, anonymized, region, self.config.leak_tolerance)
            limit = self.config.leak_fraction_box if annotation.is_box else self.config.leak_fraction
            for row in (self._row(annotation.class_name), self._row(ALL)):
                row.leak.update([fraction], [fraction > limit])
                row.counts.update(annotated=1)

    # -- combining and reading -----------------------------------------------------------------------------

    def merge(self, other: RunEvaluator, *, another_video: bool = False) -> None:
        """Add the frames ``other`` measured (a disjoint frame range of the same run, same config).

        another_video: ``other`` measured another video (a corpus): every state is summed, FID's real side too
        (a loaded real-side statistic is that video's own)."""
        if other.config != self.config:
            raise ValueError("cannot merge evaluators with different configs")
        self.flush()
        other.flush()
        for name, incoming in other.rows.items():
            row = self._row(name)
            for metric_name, metric in row.metrics().items():
                source = incoming.metrics().get(metric_name)
                if source is None:
                    continue
                if metric_name == "fid" and another_video:
                    merge_fid(row.fid, source, real=True)  # type: ignore[arg-type]
                    row.fid._computed = None  # type: ignore[union-attr]
                elif metric_name == "fid":
                    if row.real_cached != incoming.real_cached:
                        raise ValueError(f"cannot merge FID of {name!r}: one side uses saved real statistics")
                    merge_fid(row.fid, source, real=not row.real_cached)  # type: ignore[arg-type]
                    row.fid._computed = None  # type: ignore[union-attr]
                else:
                    merge_metric(metric, source)
        for name, example in other.examples.items():
            if name not in self.examples or example["area"] > self.examples[name]["area"]:
                self.examples[name] = dict(example)
        self.saw_tracks = self.saw_tracks or other.saw_tracks
        self.frames_seen += other.frames_seen
        for group, reason in other.skipped.items():
            self.skipped.setdefault(group, reason)

    def states(self) -> dict[str, Any]:
        """What this evaluator measured, as plain data and CPU tensors without its networks (small; save it with
        ``torch.save``): :meth:`from_states` rebuilds an evaluator that merges and computes as this one (a corpus
        keeps one per file and merges them with ``another_video=True``)."""
        self.flush()

        def plain(value: Any) -> Any:
            return [plain(v) for v in value] if isinstance(value, list) else value.detach().cpu().clone()

        rows = {name: {"real_cached": row.real_cached,
                       "states": {metric_name: {key: plain(value) for key, value in metric.metric_state.items()}
                                  for metric_name, metric in row.metrics().items()}}
                for name, row in self.rows.items()}
        return {"config": self.config.as_dict(), "skipped": dict(self.skipped), "fid_features": self.fid_features,
                "rows": rows, "examples": {k: dict(v) for k, v in self.examples.items()},
                "saw_tracks": self.saw_tracks, "frames_seen": self.frames_seen}

    @classmethod
    def from_states(cls, states: Mapping[str, Any]) -> RunEvaluator:
        """An evaluator (without networks: it cannot be fed frames) holding the measurements of :meth:`states`."""
        evaluator = cls(MetricsConfig.from_dict(states["config"]))
        evaluator.skipped = dict(states["skipped"])
        evaluator.fid_features = states["fid_features"]
        evaluator.reset()
        for name, saved in states["rows"].items():
            row = evaluator._row(name)
            row.real_cached = bool(saved["real_cached"])
            for metric_name, metric in row.metrics().items():
                if metric_name in saved["states"]:
                    merge_metric(metric, saved["states"][metric_name])
        evaluator.examples = {k: dict(v) for k, v in states["examples"].items()}
        evaluator.saw_tracks = bool(states["saw_tracks"])
        evaluator.frames_seen = int(states["frames_seen"])
        return evaluator

    def real_statistics(self) -> dict[str, dict[str, torch.Tensor]]:
        """class -> real-side FID states of the rows that computed them here (not loaded), for saving."""
        self.flush()
        return {name: real_state(row.fid) for name, row in self.rows.items()
                if row.fid is not None and not row.real_cached and int(getattr(row.fid, REAL_STATES[2])) > 0}

    def compute(self) -> dict[str, Any]:
        """The results as plain JSON data::

            {"classes": {row: {metric: value}}, "undefined": {row: {metric: reason}},
             "counts": {row: {count: int}}, "ran": [group...], "skipped": {group: reason},
             "examples": {row: {"frame", "box", "area", "class"}}}

        Rows: ``all`` first, then classes sorted by name. Values are floats; ``"inf"`` for an infinite PSNR
        (identical pixels); None where undefined, with the reason in ``undefined``. Metrics of skipped groups are
        left out of the rows."""
        self.flush()
        if self._wants("flicker") and self.frames_seen and not self.saw_tracks:
            self.skipped["flicker"] = ("the run's detections have no track ids (tracking was off); flicker pairs "
                                       "frames by track")
        ran = [group for group in METRIC_GROUPS if self._wants(group)]
        classes: dict[str, dict[str, Any]] = {}
        undefined: dict[str, dict[str, str]] = {}
        names = [ALL, *sorted(n for n in self.rows if n != ALL)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics' "compute before update" on merged-only states
            for name in names:
                values, reasons = self._row_values(name, self.rows[name], ran)
                classes[name] = values
                if reasons:
                    undefined[name] = reasons
        return {
            "classes": classes,
            "undefined": undefined,
            "counts": {name: self.rows[name].counts.as_ints() for name in names},
            "ran": ran,
            "skipped": {group: self.skipped[group] for group in METRIC_GROUPS if group in self.skipped},
            "examples": {name: self.examples[name] for name in names if name in self.examples},
        }

    def _row_values(self, name: str, row: _Row, ran: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}

        def put(metric: str, value: float | None, reason: str) -> None:
            if value is None or math.isnan(value):
                values[metric], reasons[metric] = None, reason
            else:
                values[metric] = "inf" if math.isinf(value) else float(value)

        counts = row.counts.as_ints()
        stride_note = f" (metrics.frame_stride={self.config.frame_stride})" if self.config.frame_stride > 1 else ""
        undetected = "no detected region of this class in the run (it is only in the annotations)"
        outside_reason = "no pixel outside the masks in the evaluated frames" + stride_note
        inside_reason = "no region in the evaluated frames" + stride_note
        no_crops = (f"no crops: {counts['small_regions']} region(s) smaller than metrics.min_crop_side="
                    f"{self.config.min_crop_side} px, {counts['regions']} region(s) in all" + stride_note)
        no_pairs = "no pair of consecutive frames showing the same track" + stride_note
        if name != ALL and counts["frames"] == 0:
            outside_reason = inside_reason = no_crops = no_pairs = undetected
        if "psnr" in ran:
            put("psnr_out", _scalar(row.psnr_out), outside_reason)
            put("psnr_in", _scalar(row.psnr_in), inside_reason)
        if "ssim" in ran:
            put("ssim_out", _scalar(row.ssim_out), outside_reason)
            put("ssim_in", _scalar(row.ssim_in), inside_reason)
        if "lpips" in ran:
            put("lpips", float(row.lpips.compute()) if counts["crops"] else None, no_crops)
        if "fid" in ran and row.fid is not None:
            value, reason = fid_value(row.fid, self.config.fid_min_crops) if counts["crops"] else (None, no_crops)
            put("fid", value, reason or "")
        if "flicker" in ran:
            flicker, original, ratio = (float(v) for v in row.flicker.compute()) if int(row.flicker.pixels) else \
                (math.nan, math.nan, math.nan)
            put("flicker", flicker, no_pairs)
            put("flicker_orig", original, no_pairs)
            put("flicker_ratio", ratio, no_pairs if math.isnan(original) else
                "flicker_orig is 0: the original region does not change between frames")
        if "leak" in ran:
            rate, pixels = (float(v) for v in row.leak.compute()) if counts["annotated"] else (math.nan, math.nan)
            put("leak_rate", rate, "no annotated region of this class")
            put("leak_pixels", pixels, "no annotated region of this class")
        order = [m for group in METRIC_GROUPS for m in GROUP_METRICS[group]]
        assert set(values) <= set(METRICS)
        return {m: values[m] for m in order if m in values}, reasons


def _scalar(metric: Metric) -> float:
    """A masked-map metric's value, nan when it saw no pixel (without calling compute on an empty state)."""
    if int(metric.count) == 0:
        return math.nan
    return float(metric.compute())
