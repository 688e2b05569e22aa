"""Steady generated fills over time: a per-video memory of each track's last fill (issue 13, part 5).

On top of the fixed per-track noise (:func:`~inpaint_anon.inpaint.diffusion.region_seed`), two things keep a
tracked region's generated fill from flickering (DeepPrivacy2 / StreamDiffusion style):

(a) warped init (``temporal_strength`` in (0, 1)): a track's generation from noise keeps its latents as they are
    at the warm-start timestep (the first timestep that ``temporal_strength`` leaves, diffusers' strength); the
    track's later frames resume from those latents, warped by the box motion (old box -> new box: scale +
    translate, :func:`warp`, at latent resolution), for the remaining steps only, with the current crop's mask
    and masked-image latents. So when nothing changed a frame repeats its track's fill exactly, whatever the
    model; what changed (the context, the mask) is taken in by the remaining steps. No pixel goes through a VAE
    round trip (which drifts), and nothing of the region's own pixels is in the start: the latents come from a
    generation. The anchor is the track's last generation from noise (a warm start keeps it, so warps do not
    pile up). Regions without one start from noise at full strength.
(b) similarity skip (``reuse_threshold``): the region's current context (the crop window outside every fill
    mask, at :data:`SIGNATURE_SIZE` px, in [0, 1]) is compared with the context of its last generation warped
    the same way: the mean absolute change over the pixels that are context in both. Below the threshold the
    model does not run for it: its fill is the previous fill warped to the new window (so it covers the whole
    window, and with it the region's current fill mask). A reused region is still filled, never shown; and it is
    reused only where the warped previous fill has generated pixels over all of the region (never old context).

Memory and threads. The pipeline runs ``encode_step`` (batch j + 1), ``denoise_step`` (j) and ``decode_step``
(j - 1) in overlapping threads. So that what a batch sees never depends on thread timing, the j-th batch of a
video reads only what the batches <= j - 2 wrote: :meth:`TemporalMemory.plan` waits (a
``threading.Condition``) until batch j - 2 is finished, and reads a snapshot of the memory as of that batch,
whether or not batch j - 1 has finished meanwhile; frames of one batch never read each other's fills. A batch
is finished when its ``decode_step`` calls :meth:`TemporalMemory.finish` (under the lock), or when a later
batch starts decoding (a batch whose steps raised writes nothing). The wait cannot deadlock: batch j - 2 needs
only the denoise and decode threads, which never wait on the encode thread; if the thread that decodes dies
(the run is being torn down) the wait gives up and the regions start fresh. ``__call__`` (one thread) therefore
gives the same fills as the three threaded steps.

A fallback (failed) region writes no memory. A track not seen for ``max_gap`` frames is forgotten; at most
``max_tracks`` tracks are kept (the most recently seen).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import InpaintBatch, RegionFill
from inpaint_anon.types import Detections

if TYPE_CHECKING:
    from inpaint_anon.inpaint.diffusion import _Region

logger = logging.getLogger(__name__)

SIGNATURE_SIZE = 32  # side (px) of the context thumbnails the similarity skip compares
MIN_CONTEXT_FRACTION = 0.25  # below this share of comparable context pixels a region is never reused
MAX_WAIT_S = 600.0  # the longest plan() waits for batch j - 2 (only a torn-down run gets near it)

Box = tuple[float, float, float, float]
Window = tuple[int, int, int, int]


def warp(image: torch.Tensor, src_window: Window, src_box: Box, dst_window: Window, dst_box: Box,
         size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (C, h, w), covering ``src_window`` of a frame, moved with the box motion ``src_box`` ->
    ``dst_box`` (per-axis scale about the box centres, plus translation) and sampled over ``dst_window`` at
    ``size`` (H, W). Windows (x0, y0, x1, y1) and boxes xyxy are frame pixels.

    Returns float32 (C, H, W) (bilinear, ``padding_mode="border"``: every output pixel is set) and bool (H, W),
    True where the source point lies inside ``src_window``."""
    height, width = size
    sx0, sy0, sx1, sy1 = src_window
    dx0, dy0, dx1, dy1 = dst_window
    scale_x = max(src_box[2] - src_box[0], 1e-3) / max(dst_box[2] - dst_box[0], 1e-3)
    scale_y = max(src_box[3] - src_box[1], 1e-3) / max(dst_box[3] - dst_box[1], 1e-3)
    device = image.device
    # frame coordinates of the output pixel centres, then of their source points
    xs = dx0 + (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * (dx1 - dx0) / width
    ys = dy0 + (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * (dy1 - dy0) / height
    src_x = (src_box[0] + src_box[2]) / 2 + (xs - (dst_box[0] + dst_box[2]) / 2) * scale_x
    src_y = (src_box[1] + src_box[3]) / 2 + (ys - (dst_box[1] + dst_box[3]) / 2) * scale_y
    u = 2 * (src_x - sx0) / (sx1 - sx0) - 1  # grid_sample's normalised coordinates (align_corners=False)
    v = 2 * (src_y - sy0) / (sy1 - sy0) - 1
    grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], dim=-1)[None]  # (1, H, W, 2): x, y
    out = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    inside = (grid[0].abs() <= 1).all(dim=-1)
    return out, inside


@dataclass(frozen=True)
class TrackFill:
    """A track's last generated fill (one memory entry).

    rgb: uint8 (3, h, w), the fill over ``window``; mask: bool (h, w), the pixels of it that were generated (the
    region's fill mask); window: (x0, y0, x1, y1) frame pixels; box: the region's box xyxy; frame_index: of the
    generation; seen: the last frame the track was filled in (by this fill or a reuse of it); context: float32
    (3, S, S) in [0, 1], the window's pixels outside every fill mask at generation (0 inside them); context_mask:
    bool (S, S), True where ``context`` holds a pixel. S = :data:`SIGNATURE_SIZE`. latent: the anchor, latents
    (4, h', w') at the warm-start timestep of the track's last generation from noise, over ``anchor_window``
    with the box ``anchor_box`` (None: no warm start from this entry).
    """

    rgb: torch.Tensor
    mask: torch.Tensor
    window: Window
    box: Box
    frame_index: int
    seen: int
    context: torch.Tensor
    context_mask: torch.Tensor
    latent: torch.Tensor | None = None
    anchor_window: Window | None = None
    anchor_box: Box | None = None


@dataclass
class WarmStart:
    """Step 3's start of a chunk of warm regions: latents (B, 4, h/f, w/f), each track's anchor warped to its
    current window, to be denoised from ``strength``'s first timestep."""

    latents: torch.Tensor
    strength: float


@dataclass(frozen=True)
class _RegionState:
    """What the memory knows of one region of a batch: its track, box, context, and the fill it starts from."""

    track_id: int | None
    box: Box
    context: torch.Tensor
    context_mask: torch.Tensor
    own: torch.Tensor  # bool (S, S): the thumbnail pixels the region's own fill mask touches
    prior: TrackFill | None


@dataclass
class TemporalPlan:
    """One batch's decisions (from :meth:`TemporalMemory.plan` to :meth:`TemporalMemory.finish`).

    video, batch: the batch's place in its video; fresh: regions generated from noise at the inpainter's
    strength; warm: regions started from their warped previous fill; reused: regions whose previous fill is
    reused; states: (frame b, region index) -> what is known of it.
    """

    video: int
    batch: int
    fresh: list[_Region] = field(default_factory=list)
    warm: list[_Region] = field(default_factory=list)
    reused: list[_Region] = field(default_factory=list)
    states: dict[tuple[int, int], _RegionState] = field(default_factory=dict)


class TemporalMemory:
    """Per-video memory of tracked regions' fills; see the module docstring.

    Args:
        strength: ``temporal_strength``: None or 1.0 = off; in (0, 1): warped init at this strength.
        reuse_threshold: None = off; >= 0: reuse a fill while the mean absolute context change (in [0, 1] units)
            stays below it (0: never reuse).
        steps: the inpainter's steps (``steps * strength`` must leave a step).
        max_gap: frames after which an unseen track is forgotten (>= 1).
        max_tracks: tracks kept at most (>= 1).
    """

    def __init__(self, strength: float | None, reuse_threshold: float | None, *, steps: int, max_gap: int = 16,
                 max_tracks: int = 64) -> None:
        if strength is not None and not (isinstance(strength, (int, float)) and 0 < strength <= 1):
            raise ConfigError(f"temporal_strength must be in (0, 1] or null, got {strength!r}: use e.g. 0.5 "
                              "(null or 1.0 turns the warped start off)")
        if strength is not None and strength < 1 and int(steps * strength) < 1:
            raise ConfigError(f"steps * temporal_strength = {steps * strength:g} leaves no denoising step: raise "
                              "steps or temporal_strength")
        if reuse_threshold is not None and not (isinstance(reuse_threshold, (int, float)) and reuse_threshold >= 0):
            raise ConfigError(f"reuse_threshold must be >= 0 or null, got {reuse_threshold!r}: use e.g. 0.02 (mean "
                              "absolute change, 0-1 units; null turns reuse off)")
        if max_gap < 1 or max_tracks < 1:
            raise ConfigError(f"max_gap and max_tracks must be >= 1, got {max_gap}, {max_tracks}")
        self.strength = None if strength is None or strength == 1 else float(strength)
        self.reuse_threshold = None if reuse_threshold is None else float(reuse_threshold)
        self.max_gap, self.max_tracks = max_gap, max_tracks
        self._cond = threading.Condition()
        self._video = 0
        self.start_video()

    @property
    def enabled(self) -> bool:
        return self.strength is not None or self.reuse_threshold is not None

    def start_video(self) -> None:
        """Forget every track and restart the batch count (a new video)."""
        with self._cond:
            self._video += 1
            self._next = 0  # the next batch number
            self._base: dict[int, TrackFill] = {}  # memory as of batch self._upto
            self._upto = -1
            self._written: dict[int, dict[int, TrackFill]] = {}  # finished batches > self._upto
            self._finished = -1  # every batch <= this is finished
            self._last_write: dict[int, int] = {}  # track id -> the batch that last wrote its entry
            self._decoder: threading.Thread | None = None
            self.counts = {"fresh": 0, "warm": 0, "reused": 0}
            self._cond.notify_all()

    def record(self) -> dict[str, Any]:
        """For run.json: the settings and this video's region counts."""
        return {"temporal_strength": self.strength, "reuse_threshold": self.reuse_threshold,
                "temporal_regions": dict(self.counts)}

    # ------------------------------------------------------------------------------------------ encode side

    def plan(self, batch: InpaintBatch, regions: list[_Region]) -> TemporalPlan | None:
        """Number the batch, wait for batch j - 2, and sort its regions into fresh, warm and reused (None: off).

        ``batch``: on the inpainter's device; ``regions``: step 1's list."""
        if not self.enabled:
            return None
        with self._cond:
            video, number = self._video, self._next
            self._next += 1
        first = min((r.frame_index for r in regions), default=0)
        memory = self._snapshot(video, number, first)
        plan = TemporalPlan(video, number)
        known = {b: batch.detections[b].union_mask() for b in {r.b for r in regions}}
        for r in regions:
            dets = batch.detections[r.b]
            track_id = None if dets.track_ids is None else int(dets.track_ids[r.index])
            window = _window(r)
            context, context_mask = _context(batch.images[r.b], known[r.b], window)
            prior = memory.get(track_id) if track_id is not None else None
            if prior is not None and r.frame_index - prior.seen > self.max_gap:
                prior = None
            own = _touched(dets.masks[r.index], window)
            state = _RegionState(track_id, r.box, context, context_mask, own, prior)
            plan.states[(r.b, r.index)] = state
            if prior is not None and self._reusable(state, window):
                plan.reused.append(r)
            elif prior is not None and self.strength is not None and prior.latent is not None:
                plan.warm.append(r)
            else:
                plan.fresh.append(r)
        with self._cond:
            if video == self._video:
                self.counts["fresh"] += len(plan.fresh)
                self.counts["warm"] += len(plan.warm)
                self.counts["reused"] += len(plan.reused)
        return plan

    @staticmethod
    def groups(plan: TemporalPlan | None, regions: list[_Region]) -> list[list[_Region]]:
        """The regions to generate, in groups that must not share a chunk (one strength per chunk)."""
        if plan is None:
            return [regions]
        return [group for group in (plan.fresh, plan.warm) if group]

    def warm_start(self, plan: TemporalPlan | None, regions: list[_Region], crop_size: tuple[int, int],
                   scale_factor: int) -> WarmStart | None:
        """Step 3's start for a chunk of ``regions`` (all warm or all fresh; None for fresh ones): each track's
        anchor latents warped from their window and box to the region's, at the latent size of ``crop_size``
        (h, w) / ``scale_factor``."""
        if plan is None or not regions or regions[0] not in plan.warm:
            return None
        size = (crop_size[0] // scale_factor, crop_size[1] // scale_factor)
        latents = []
        for r in regions:
            state = plan.states[(r.b, r.index)]
            prior = state.prior
            warped, _ = warp(prior.latent, prior.anchor_window, prior.anchor_box, _window(r), state.box, size)
            latents.append(warped)
        return WarmStart(torch.stack(latents), self.strength)

    def anchor_timestep(self, timesteps: torch.Tensor, steps: int) -> torch.Tensor | None:
        """The timestep at which a generation from noise keeps its latents for the warm starts: the first that
        ``temporal_strength`` leaves of the scheduler's ``timesteps`` for ``steps`` steps (None: off)."""
        if self.strength is None:
            return None
        order = max(len(timesteps) // steps, 1)
        start = (steps - min(int(steps * self.strength), steps)) * order
        return timesteps[start] if start < len(timesteps) else None

    def _reusable(self, state: _RegionState, window: Window) -> bool:
        if self.reuse_threshold is None or self.reuse_threshold <= 0:
            return False
        prior = state.prior
        size = (SIGNATURE_SIZE, SIGNATURE_SIZE)
        before, inside = warp(prior.context, prior.window, prior.box, window, state.box, size)
        had, _ = warp(prior.context_mask[None].float(), prior.window, prior.box, window, state.box, size)
        generated, _ = warp(prior.mask[None].float(), prior.window, prior.box, window, state.box, size)
        if bool((state.own & ~((generated[0] > 0) & inside)).any()):
            return False  # part of the region has no generated pixel to show (privacy: never old context)
        both = inside & (had[0] > 0.999) & state.context_mask
        if both.float().mean() < MIN_CONTEXT_FRACTION:
            return False
        change = (before - state.context).abs().mean(dim=0)[both].mean()
        return float(change) < self.reuse_threshold

    def _snapshot(self, video: int, number: int, first_frame: int) -> dict[int, TrackFill]:
        """The memory as batches <= ``number`` - 2 left it (waits for them), pruned for frame ``first_frame``."""
        need = number - 2
        with self._cond:
            waited = time.monotonic()
            while video == self._video and self._finished < need:
                decoder = self._decoder
                if decoder is not None and not decoder.is_alive() or time.monotonic() - waited > MAX_WAIT_S:
                    logger.warning("temporal memory: batch %d never finished; batch %d starts fresh", need, number)
                    return {}
                self._cond.wait(timeout=0.05)
            if video != self._video:
                return {}
            for done in sorted(b for b in self._written if b <= need):
                self._base.update(self._written.pop(done))
            self._upto = need
            alive = {t: e for t, e in self._base.items() if first_frame - e.seen <= self.max_gap}
            kept = sorted(alive, key=lambda t: (alive[t].seen, t), reverse=True)[: self.max_tracks]
            self._base = {t: alive[t] for t in sorted(kept)}
            pending = {t for written in self._written.values() for t in written}
            self._last_write = {t: b for t, b in self._last_write.items() if t in self._base or t in pending}
            return dict(self._base)

    # ------------------------------------------------------------------------------------------ decode side

    def decoding(self, plan: TemporalPlan | None) -> None:
        """Start of ``decode_step``: every earlier batch is finished (one whose steps raised writes nothing)."""
        if plan is not None:
            self._finish(plan, {}, upto=plan.batch - 1)

    def finish(self, plan: TemporalPlan | None, generated: list[RegionFill], detections: list[Detections],
               make_fill: Callable[[list[Detections], _Region, torch.Tensor], RegionFill],
               anchors: dict[tuple[int, int], torch.Tensor] | None = None) -> list[RegionFill]:
        """End of ``decode_step``: remember the ``generated`` fills (not the fallbacks') with their anchors (a
        fresh region's: ``anchors[(b, index)]``, its latents at the warm-start timestep; a warm region keeps its
        prior's), and return the reused regions' fills (their previous fill warped to the new window, through
        ``make_fill``, in region order)."""
        if plan is None:
            return []
        entries: dict[int, TrackFill] = {}
        by_region = {(f.frame, f.region): f for f in generated}
        for r in sorted(plan.fresh + plan.warm, key=lambda r: (r.frame_index, r.b, r.index)):
            state, fill = plan.states[(r.b, r.index)], by_region.get((r.b, r.index))
            if fill is None or state.track_id is None:
                continue
            if r in plan.warm:
                anchor = (state.prior.latent, state.prior.anchor_window, state.prior.anchor_box)
            else:
                latent = (anchors or {}).get((r.b, r.index))
                anchor = (latent, _window(r), state.box) if latent is not None else (None, None, None)
            entries[state.track_id] = TrackFill(fill.rgb, fill.mask, fill.window, state.box, r.frame_index,
                                                r.frame_index, state.context, state.context_mask, *anchor)
        reused = []
        for r in plan.reused:
            state = plan.states[(r.b, r.index)]
            prior, window = state.prior, _window(r)
            size = (window[3] - window[1], window[2] - window[0])
            rgb, _ = warp(prior.rgb.float() / 255, prior.window, prior.box, window, state.box, size)
            reused.append(make_fill(detections, r, rgb))
            if state.track_id not in entries or entries[state.track_id].seen < r.frame_index:
                entries[state.track_id] = replace(prior, seen=r.frame_index)
        self._finish(plan, entries, upto=plan.batch)
        return reused

    def _finish(self, plan: TemporalPlan, entries: dict[int, TrackFill], upto: int) -> None:
        with self._cond:
            if plan.video != self._video:
                return
            self._decoder = threading.current_thread()
            # one chain per track: batch j writes a track only if batch j - 1 (whose writes it could not see)
            # did not, so every entry descends from the latest one (else even and odd batches would alternate
            # between two lines of fills, a jump at every batch)
            entries = {t: e for t, e in entries.items() if self._last_write.get(t) != plan.batch - 1}
            if entries and plan.batch > self._upto:
                self._written[plan.batch] = entries
                self._last_write.update(dict.fromkeys(entries, plan.batch))
            self._finished = max(self._finished, upto)
            self._cond.notify_all()


def _window(region: _Region) -> Window:
    w = region.window
    return (w.x0, w.y0, w.x1, w.y1)


def _touched(mask: torch.Tensor, window: Window) -> torch.Tensor:
    """bool (S, S): the thumbnail pixels of ``window`` that ``mask`` (bool (H, W)) touches."""
    x0, y0, x1, y1 = window
    thumb = F.interpolate(mask[y0:y1, x0:x1].float()[None, None], size=(SIGNATURE_SIZE, SIGNATURE_SIZE),
                          mode="bilinear", antialias=True, align_corners=False)
    return thumb[0, 0] > 0.5


def _context(image: torch.Tensor, known: torch.Tensor, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (3, S, S) in [0, 1]: ``image`` (uint8 (3, H, W)) over ``window`` outside ``known`` (bool (H, W),
    every fill mask), 0 inside it; and bool (S, S), where it holds context only."""
    x0, y0, x1, y1 = window
    size = (SIGNATURE_SIZE, SIGNATURE_SIZE)
    crop = image[:, y0:y1, x0:x1].float()[None] / 255
    masked = F.interpolate(known[y0:y1, x0:x1].float()[None, None], size=size, mode="bilinear", antialias=True,
                           align_corners=False)[0, 0] > 0  # any masked pixel in a thumbnail pixel's reach
    context = F.interpolate(crop * ~known[y0:y1, x0:x1], size=size, mode="bilinear", antialias=True,
                            align_corners=False)[0]
    return torch.where(masked, torch.zeros_like(context), context), ~masked
