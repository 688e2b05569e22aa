"""Web UI (Gradio): ``inpaint-anon ui [host=127.0.0.1] [port=7860] [+experiment=traffic] ...`` or
``python -m inpaint_anon.ui ...``.

The Hydra edge of the UI (``conf/ui.yaml``: ``host``, ``port``, ``keep_minutes``, ``max_upload_mb``, ``work_dir``,
plus every group of ``conf/run.yaml``). :func:`main` composes the config and builds the components once
(:func:`components_from_config`: detector, tracker, compositor, a diffusion model when the config uses one); each
request then runs an :class:`~inpaint_anon.pipeline.AnonymizePipeline` on its file with the method chosen per
class. The package side is :func:`build_app` (components passed in), which tests drive with a scripted detector.

Tabs: Image (before/after slider), Video (before/after players; H.264 yuv420p +faststart, plays in browsers),
Folder (a .zip of images/videos through :func:`inpaint_anon.batch.run_batch`, a .zip of the results back) and
Whitelist (photos of a person who may stay visible, :meth:`inpaint_anon.whitelist.Whitelist.from_folder`).

Safety of the server:

- bound to 127.0.0.1 unless ``host`` says otherwise; no share link; one job at a time (queue concurrency 1);
- uploads larger than ``max_upload_mb`` are refused by the server;
- every file the UI reads or writes lies in its work folder: Gradio's upload cache (``GRADIO_TEMP_DIR``) is set
  inside it and ``allowed_paths`` is only that folder; uploads are copied under uuid names (an uploader never
  chooses a path; a person's name must be a plain name), results go to ``results/<uuid>/``;
- uploads and results older than ``keep_minutes`` are deleted by a cleanup thread (and Gradio's ``delete_cache``);
  the whitelist photos stay until the server stops; a work folder the UI created itself is removed then.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from inpaint_anon.atomic import AtomicPath
from inpaint_anon.composite import Compositor
from inpaint_anon.errors import ConfigError, InpaintAnonError, InputError
from inpaint_anon.inpaint.base import Inpainter
from inpaint_anon.types import RunResult
from inpaint_anon.video import IMAGE_SUFFIXES, VideoSettings

if TYPE_CHECKING:
    import gradio as gr

    from inpaint_anon.batch import BatchSummary
    from inpaint_anon.detect.base import Detector
    from inpaint_anon.detect.faces import FaceDetector
    from inpaint_anon.inpaint.diffusion import LatentInpainter
    from inpaint_anon.track import Tracker
    from inpaint_anon.whitelist import FaceEmbedder, Whitelist

logger = logging.getLogger("inpaint_anon")

UI_METHODS = ("blur", "pixelate", "solid", "diffusion", "none")
"""Methods a class may get in the UI (a scramble needs a key file and a lossless output: use the CLI)."""
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
WHITELIST_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Photo formats :meth:`inpaint_anon.whitelist.Whitelist.from_folder` reads."""
PERSON_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$")
"""A whitelist person's name: it becomes a folder name, so letters, digits, space, _ and - only."""


@dataclass
class UIComponents:
    """What the UI runs, built once when the server starts (models load here, never per request).

    detector: finds the regions; its class names are the UI's classes.
    compositor: mask dilation / feathering / paste.
    tracker: makes a video's :class:`~inpaint_anon.track.Tracker` (``fps=``); None = no tracking.
    methods: class name -> the method selected when the page opens (one of :data:`UI_METHODS`); classes not
        listed start with ``default_method``.
    diffusion: the loaded diffusion inpainter when the config uses one; None = no ``diffusion`` choice.
    video: encoder settings of video results (the codec is always libx264: H.264 yuv420p, +faststart in .mp4).
    blur_strength, pixelate_blocks: the sliders' starting values.
    embedder, face_detector: load the whitelist's face embedder / face detector on first use (None: no
        whitelist tab).
    """

    detector: Detector
    compositor: Compositor = field(default_factory=Compositor)
    tracker: Callable[..., Tracker] | None = None
    methods: dict[str, str] = field(default_factory=dict)
    default_method: str = "blur"
    diffusion: LatentInpainter | None = None
    video: VideoSettings = field(default_factory=VideoSettings)
    device: str = "auto"
    detect_stride: int = 1
    batch_frames: int = 4
    queue_size: int = 8
    blur_strength: float = 1.0
    pixelate_blocks: int = 8
    embedder: Callable[[], FaceEmbedder] | None = None
    face_detector: Callable[[], FaceDetector] | None = None

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(self.detector.names.values()))

    @property
    def offered(self) -> list[str]:
        """The methods this server offers (diffusion only with a loaded model)."""
        return [m for m in UI_METHODS if m != "diffusion" or self.diffusion is not None]


@dataclass(frozen=True)
class UISettings:
    """Server settings (``conf/ui.yaml``): ``work_dir`` holds every upload and result; ``keep_minutes``: age after
    which uploads and results are deleted; ``max_upload_mb``: largest upload accepted."""

    work_dir: Path
    keep_minutes: float = 60.0
    max_upload_mb: float = 500.0

    def __post_init__(self) -> None:
        if not self.keep_minutes > 0:
            raise ConfigError(f"keep_minutes={self.keep_minutes:g} must be > 0 (minutes a result stays downloadable)")
        if not self.max_upload_mb > 0:
            raise ConfigError(f"max_upload_mb={self.max_upload_mb:g} must be > 0 (the largest upload, MB)")


@dataclass
class Choice:
    """One request's settings: method per class and the strength of each method."""

    methods: dict[str, str]
    blur_strength: float = 1.0
    pixelate_blocks: int = 8
    diffusion_strength: float = 1.0


class AnonymizeUI:
    """The UI's work, apart from Gradio: file handling, one pipeline run per request, the whitelist, cleanup.

    Folders in ``settings.work_dir``: ``uploads/`` (copies of uploads, uuid names), ``results/<uuid>/``,
    ``whitelist/<name>/`` (photos, uuid names), ``gradio/`` (Gradio's own upload cache).
    """

    def __init__(self, components: UIComponents, settings: UISettings) -> None:
        self.components = components
        self.settings = settings
        self.work_dir = settings.work_dir.resolve()
        for sub in ("uploads", "results", "whitelist", "gradio"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        self.whitelist: Whitelist | None = None
        self._embedder: FaceEmbedder | None = None
        self._face_detector: FaceDetector | None = None
        self._stop = threading.Event()

    # -- files -------------------------------------------------------------------------------------------

    def save_upload(self, path: str | Path, allowed: Sequence[str]) -> Path:
        """Copy an uploaded file into ``uploads/`` under a uuid name (its suffix kept when in ``allowed``)."""
        source = Path(path)
        suffix = source.suffix.lower()
        if suffix not in allowed:
            raise InputError(f"{source.name}: {suffix or 'no suffix'} is not accepted here; upload one of: "
                             f"{', '.join(allowed)}")
        target = self.work_dir / "uploads" / f"{uuid.uuid4().hex}{suffix}"
        shutil.copyfile(source, target)
        return target

    def result_dir(self) -> Path:
        folder = self.work_dir / "results" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def cleanup(self, now: float | None = None) -> list[Path]:
        """Delete uploads and results (and Gradio's cached files) older than ``keep_minutes``; returns them."""
        limit = (time.time() if now is None else now) - 60.0 * self.settings.keep_minutes
        removed = []
        for sub in ("uploads", "results", "gradio"):
            for entry in (self.work_dir / sub).iterdir():
                try:
                    if entry.stat().st_mtime >= limit:
                        continue
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                except FileNotFoundError:
                    continue
                removed.append(entry)
        return removed

    def start_cleanup(self, every_s: float = 60.0) -> threading.Thread:
        """A daemon thread that runs :meth:`cleanup` every ``every_s`` seconds until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.wait(every_s):
                for path in self.cleanup():
                    logger.info("ui: deleted %s (older than %g min)", path, self.settings.keep_minutes)

        thread = threading.Thread(target=loop, name="ui-cleanup", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # -- one run -----------------------------------------------------------------------------------------

    def inpainter(self, choice: Choice) -> Inpainter:
        """The inpainter of one request: a :class:`~inpaint_anon.inpaint.router.ClassRouter` of the methods
        chosen per class (blur / pixelate / solid are built now, they load nothing; diffusion is the loaded one)."""
        from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, SolidInpainter
        from inpaint_anon.inpaint.router import ClassRouter

        c = self.components
        built: dict[str, Inpainter | None] = {"none": None}
        for method in dict.fromkeys(choice.methods.values()):
            if method not in c.offered:
                raise ConfigError(f"method {method!r} is not offered here; choose one of: {', '.join(c.offered)}")
            if method == "blur":
                built[method] = BlurInpainter(strength=choice.blur_strength, device=c.device)
            elif method == "pixelate":
                built[method] = PixelateInpainter(blocks=int(choice.pixelate_blocks), device=c.device)
            elif method == "solid":
                built[method] = SolidInpainter(device=c.device)
            elif method == "diffusion" and c.diffusion is not None:
                strength = float(choice.diffusion_strength)
                if not 0 < strength <= 1 or int(c.diffusion.steps * strength) < 1:
                    raise ConfigError(f"diffusion strength {strength:g} leaves no denoising step of "
                                      f"{c.diffusion.steps}; raise it (at most 1)")
                c.diffusion.strength = strength  # one job at a time (queue concurrency 1)
                built[method] = c.diffusion
        unknown = sorted(set(choice.methods) - set(c.classes))
        if unknown:
            raise ConfigError(f"class {unknown[0]!r} is not detected here; classes: {', '.join(c.classes)}")
        default = next((b for b in built.values() if b is not None), None) or BlurInpainter(device=c.device)
        return ClassRouter({k: built[v] for k, v in choice.methods.items()}, default=default)

    def anonymize(self, source: Path, output: Path, choice: Choice) -> RunResult:
        """Run the pipeline on ``source`` into ``output`` with ``choice`` (and the whitelist, when it has people)."""
        from inpaint_anon.pipeline import AnonymizePipeline

        c = self.components
        extra: dict[str, Any] = {"whitelist": self.whitelist} if self.whitelist is not None else {}
        pipe = AnonymizePipeline(detector=c.detector, inpainter=self.inpainter(choice), compositor=c.compositor,
                                 tracker=c.tracker, detect_stride=c.detect_stride, batch_frames=c.batch_frames,
                                 queue_size=c.queue_size, progress=True, **extra)
        video = VideoSettings(codec="libx264", crf=c.video.crf, preset=c.video.preset, max_pixels=c.video.max_pixels)
        return pipe(source, output, video=video)

    def run_image(self, path: str | Path, choice: Choice) -> tuple[Path, Path, str]:
        """(the uploaded image, the anonymized one, a summary line)."""
        source = self.save_upload(path, IMAGE_SUFFIXES)
        output = self.result_dir() / f"anonymized{source.suffix}"
        return source, output, summary(self.anonymize(source, output, choice))

    def run_video(self, path: str | Path, choice: Choice) -> tuple[Path, Path, str]:
        """(the uploaded video, the anonymized .mp4: H.264 yuv420p +faststart, a summary line)."""
        source = self.save_upload(path, VIDEO_SUFFIXES)
        output = self.result_dir() / "anonymized.mp4"
        return source, output, summary(self.anonymize(source, output, choice))

    def run_folder(self, path: str | Path, choice: Choice) -> tuple[Path, dict[str, Any]]:
        """A .zip of images and videos -> (a .zip of the anonymized files, the batch summary)."""
        from inpaint_anon.batch import run_batch

        source = self.save_upload(path, (".zip",))
        folder = self.result_dir()
        out_dir = folder / "anonymized"
        batch: BatchSummary = run_batch(source, out_dir, lambda f, o: self.anonymize(f, o, choice), progress=True)
        archive = folder / "anonymized.zip"
        with AtomicPath(archive) as out, zipfile.ZipFile(out.temp, "w", zipfile.ZIP_DEFLATED) as packed:
            for file in sorted(p for p in out_dir.rglob("*") if p.is_file()):
                packed.write(file, file.relative_to(out_dir).as_posix())
        return archive, batch.as_dict()

    # -- whitelist ---------------------------------------------------------------------------------------

    def add_person(self, name: str, photos: Sequence[str | Path]) -> list[str]:
        """Save ``photos`` of ``name`` under ``whitelist/<name>/`` (uuid names), rebuild the whitelist from the
        folder, and return the names of everyone on it."""
        from inpaint_anon.whitelist import Whitelist

        c = self.components
        if c.embedder is None or c.face_detector is None:
            raise ConfigError("this server has no whitelist (no face embedder); start it with the default config")
        name = (name or "").strip()
        if not PERSON_NAME.match(name):
            raise InputError(f"person name {name!r} is not a plain name; use letters, digits, spaces, _ or - "
                             "(at most 64, starting with a letter or digit)")
        if not photos:
            raise InputError(f"no photo of {name} given; upload one or more photos of their face")
        folder = self.work_dir / "whitelist" / name
        saved = [self.save_upload(photo, WHITELIST_SUFFIXES) for photo in photos]
        folder.mkdir(exist_ok=True)
        added = [photo.replace(folder / photo.name) for photo in saved]
        try:
            if self._embedder is None:
                self._embedder = c.embedder()
            if self._face_detector is None:
                self._face_detector = c.face_detector()
            self.whitelist = Whitelist.from_folder(self.work_dir / "whitelist", self._embedder, self._face_detector,
                                                   cache_dir=self.work_dir / "whitelist_cache")
        except BaseException:  # the photos that failed leave the folder, so the next person can still be added
            for photo in added:
                photo.unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
            raise
        return list(self.whitelist.people)

    def people(self) -> list[str]:
        return list(self.whitelist.people) if self.whitelist is not None else []

    def gallery(self) -> list[tuple[str, str]]:
        """(a photo, the name) of each person on the whitelist, for the page's gallery."""
        shown = []
        for name in self.people():
            photos = sorted((self.work_dir / "whitelist" / name).iterdir())
            if photos:
                shown.append((str(photos[0]), name))
        return shown


def summary(result: RunResult) -> str:
    """One line about a finished run: frames, speed, regions per class and fallbacks."""
    regions: dict[str, int] = {}
    for event in result.events:
        if event.get("event") == "fallback":
            regions["fallback"] = regions.get("fallback", 0) + 1
    fallbacks = f"; {regions['fallback']} region(s) filled by the fail-closed fallback" if regions else ""
    return (f"{result.frames_out} frame(s) in {result.wall_seconds:.1f} s ({result.fps_processing:.1f} fps)"
            f"{fallbacks}")


# -- Gradio ---------------------------------------------------------------------------------------------


def build_app(components: UIComponents, settings: UISettings) -> tuple[gr.Blocks, AnonymizeUI]:
    """The Gradio app and the :class:`AnonymizeUI` behind it (not started: see :func:`launch`).

    Sets ``GRADIO_TEMP_DIR`` to ``<work_dir>/gradio`` (Gradio keeps uploads there) before building the Blocks.
    """
    ui = AnonymizeUI(components, settings)
    os.environ["GRADIO_TEMP_DIR"] = str(ui.work_dir / "gradio")
    import gradio as gr

    c = components
    keep_s = int(60 * settings.keep_minutes)

    def fail(err: InpaintAnonError) -> gr.Error:
        return gr.Error(str(err), print_exception=False)

    with gr.Blocks(title="inpaint_anon", delete_cache=(max(60, keep_s // 4), keep_s)) as app:
        gr.Markdown("# inpaint_anon\nDetected regions are anonymized with the method chosen per class; a region "
                    "the model fails on is blurred or blacked out, never left as it was.")
        with gr.Accordion("Methods", open=True):
            method_boxes = [gr.Dropdown(c.offered, value=c.methods.get(name, c.default_method), label=name)
                            for name in c.classes]
            with gr.Row():
                blur = gr.Slider(0.25, 4.0, value=c.blur_strength, step=0.05, label="blur strength")
                blocks = gr.Slider(2, 32, value=c.pixelate_blocks, step=1, label="pixelate blocks (fewer: coarser)")
                dstrength = gr.Slider(0.1, 1.0, value=c.diffusion.strength if c.diffusion else 1.0, step=0.05,
                                      label="diffusion strength", visible=c.diffusion is not None)
        settings_inputs = [blur, blocks, dstrength, *method_boxes]
        names = ["file", "blur_strength", "pixelate_blocks", "diffusion_strength",
                 *(f"method_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{i}" for i, name in enumerate(c.classes))]

        def choice_of(values: Sequence[Any]) -> Choice:
            b, k, d, *methods = values
            return Choice(dict(zip(c.classes, methods)), float(b), int(k), float(d))

        with gr.Tab("Image"):
            image_in = gr.Image(type="filepath", label="image", sources=["upload"])
            image_go = gr.Button("Anonymize image", variant="primary")
            image_view = gr.ImageSlider(type="filepath", label="before / after")
            image_file = gr.File(label="download")
            image_info = gr.Textbox(label="run", interactive=False)

            def do_image(path: str | None, *values: Any) -> Any:
                if not path:
                    raise gr.Error("no image uploaded; choose an image file first", print_exception=False)
                try:
                    before, after, info = ui.run_image(path, choice_of(values))
                except InpaintAnonError as err:
                    raise fail(err) from None
                return (str(before), str(after)), str(after), info

            image_go.click(with_progress(do_image, names), [image_in, *settings_inputs],
                           [image_view, image_file, image_info],
                           api_name="image")

        with gr.Tab("Video"):
            video_in = gr.File(label="video", file_types=list(VIDEO_SUFFIXES))
            video_go = gr.Button("Anonymize video", variant="primary")
            with gr.Row():
                video_before = gr.Video(label="before", interactive=False)
                video_after = gr.Video(label="after (H.264)", interactive=False)
            video_file = gr.File(label="download")
            video_info = gr.Textbox(label="run", interactive=False)

            def do_video(path: str | None, *values: Any) -> Any:
                if not path:
                    raise gr.Error("no video uploaded; choose a video file first", print_exception=False)
                try:
                    before, after, info = ui.run_video(path, choice_of(values))
                except InpaintAnonError as err:
                    raise fail(err) from None
                return str(before), str(after), str(after), info

            video_go.click(with_progress(do_video, names), [video_in, *settings_inputs],
                           [video_before, video_after, video_file, video_info],
                           api_name="video")

        with gr.Tab("Folder (zip)"):
            zip_in = gr.File(label="a .zip of images and videos", file_types=[".zip"])
            zip_go = gr.Button("Anonymize all", variant="primary")
            zip_file = gr.File(label="download (.zip)")
            zip_info = gr.JSON(label="summary")

            def do_folder(path: str | None, *values: Any) -> Any:
                if not path:
                    raise gr.Error("no .zip uploaded; choose a .zip file first", print_exception=False)
                try:
                    archive, record = ui.run_folder(path, choice_of(values))
                except InpaintAnonError as err:
                    raise fail(err) from None
                return str(archive), record

            zip_go.click(with_progress(do_folder, names), [zip_in, *settings_inputs],
                         [zip_file, zip_info], api_name="folder")

        with gr.Tab("Whitelist", visible=c.embedder is not None):
            gr.Markdown("People on the whitelist stay visible; every other face is anonymized.")
            person = gr.Textbox(label="person name")
            photos = gr.File(label="photos of their face", file_count="multiple", file_types=list(WHITELIST_SUFFIXES))
            add = gr.Button("Add to whitelist")
            authorised = gr.Gallery(label="authorised people", columns=6, height=220)

            def do_add(name: str, files: list[str] | None) -> list[tuple[str, str]]:
                try:
                    ui.add_person(name, files or [])
                except InpaintAnonError as err:
                    raise fail(err) from None
                return ui.gallery()

            add.click(do_add, [person, photos], [authorised], api_name="whitelist")
    app.queue(default_concurrency_limit=1)
    return app, ui


def launch(app: gr.Blocks, ui: AnonymizeUI, host: str = "127.0.0.1", port: int = 7860, *,
           block: bool = True) -> None:
    """Start the server: ``host``/``port``, no share link, uploads up to ``max_upload_mb``, files served only
    from the work folder, the cleanup thread running. ``block=False`` returns once it listens (tests)."""
    ui.start_cleanup()
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, quiet=True,
               max_file_size=int(ui.settings.max_upload_mb * 1024 * 1024), allowed_paths=[str(ui.work_dir)],
               prevent_thread_lock=not block)


def with_progress(work: Callable[..., Any], names: Sequence[str]) -> Callable[..., Any]:
    """``work(*inputs)`` as a Gradio handler with a progress bar that follows the pipeline's tqdm bar (frames,
    fps, ETA). Gradio finds ``gr.Progress`` only among positional parameters, and the UI's inputs vary with the
    detector's classes, so the handler's signature is written out: the inputs (``names``: the API's parameter
    names), then ``progress``."""
    import gradio as gr

    def handler(*args: Any) -> Any:
        return work(*args[:len(names)])

    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    parameters.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=gr.Progress(track_tqdm=True)))
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return handler


# -- Hydra entry ----------------------------------------------------------------------------------------


def components_from_config(cfg: DictConfig) -> UIComponents:
    """The UI's components from a composed ``conf/ui.yaml`` (the run groups): detector(s), tracker, compositor,
    the diffusion model when ``inpainter`` or ``anonymize`` uses it, the starting method per class."""
    from inpaint_anon import run

    method_nodes = run._method_nodes(cfg)
    chosen = run._inpainter_choice() or "blur"
    if chosen == "scramble" or "scramble" in method_nodes:
        raise ConfigError("the web UI does not scramble (it needs a key file and a lossless output); use the CLI, "
                          "or choose blur, pixelate, solid or diffusion")
    detector, _, _ = run._build_detector(cfg)
    tracker = run._instantiate("tracker", cfg.tracker) if cfg.get("tracker") is not None else None
    compositor = run._instantiate("compositor", cfg.compositor)
    diffusion = None
    if chosen in ("diffusion", "tiny"):
        diffusion = run._instantiate("inpainter", run._plain(cfg.inpainter))
    elif method_nodes.get("diffusion") is not None:
        diffusion = run._instantiate("anonymize.diffusion", run._plain(method_nodes["diffusion"]))
    default = "diffusion" if chosen in ("diffusion", "tiny") else chosen
    if default not in UI_METHODS:
        raise ConfigError(f"inpainter={chosen} is not offered by the web UI; choose one of: {', '.join(UI_METHODS)}")
    classes = set(detector.names.values())
    methods = {str(k): str(v) for k, v in (cfg.get("anonymize") or {}).items() if v is not None and k in classes}
    blur_node = cfg.inpainter if chosen == "blur" else method_nodes.get("blur")
    pixelate_node = cfg.inpainter if chosen == "pixelate" else method_nodes.get("pixelate")
    pipeline = run._plain(cfg.pipeline)
    embedder, faces = _whitelist_loaders(str(cfg.device))
    return UIComponents(
        detector=detector, compositor=compositor, tracker=tracker, methods=methods, default_method=default,
        diffusion=diffusion, video=VideoSettings.from_dict({**run._plain(cfg.video), "codec": "libx264"}),
        device=str(cfg.device), detect_stride=int(cfg.detector.get("stride", 1)),
        batch_frames=int(pipeline.get("batch_frames", 4)), queue_size=int(pipeline.get("queue_size", 8)),
        blur_strength=float(blur_node.strength) if blur_node is not None else 1.0,
        pixelate_blocks=int(pixelate_node.blocks) if pixelate_node is not None else 8,
        embedder=embedder, face_detector=faces)


def _whitelist_loaders(device: str) -> tuple[Callable[[], FaceEmbedder], Callable[[], FaceDetector]]:
    def embedder() -> FaceEmbedder:
        from inpaint_anon.whitelist import load_embedder

        return load_embedder(device=device)

    def faces() -> FaceDetector:
        from inpaint_anon.detect.faces import face_detector

        return face_detector("centerface", device=device)

    return embedder, faces


def settings_from_config(cfg: DictConfig) -> tuple[UISettings, bool]:
    """(UISettings, whether the work folder is a temporary one this server made and removes when it stops)."""
    given = cfg.get("work_dir")
    settings = UISettings(Path(str(given or ".")).expanduser(), float(cfg.keep_minutes), float(cfg.max_upload_mb))
    if given:
        return settings, False
    return replace(settings, work_dir=Path(tempfile.mkdtemp(prefix="inpaint_anon_ui_"))), True


@hydra.main(version_base="1.3", config_path="conf", config_name="ui")
def _hydra_main(cfg: DictConfig) -> None:
    from inpaint_anon.run import Interrupted

    for key in ("host", "port", "keep_minutes", "max_upload_mb"):
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"{key} is not set; pass {key}=VALUE (see conf/ui.yaml)")
    if not isinstance(cfg.port, int) or not 0 < cfg.port < 65536:
        raise ConfigError(f"port={cfg.port!r} is not a TCP port; pass port=7860 (1..65535)")
    settings, temporary = settings_from_config(cfg)
    try:
        app, ui = build_app(components_from_config(cfg), settings)
        print(f"inpaint_anon UI on http://{cfg.host}:{cfg.port} (work folder {ui.work_dir})", file=sys.stderr,
              flush=True)
        try:
            launch(app, ui, str(cfg.host), int(cfg.port))
        except Interrupted as stopped:  # Ctrl-C / SIGTERM: the normal end of a server
            print(f"inpaint_anon UI stopped ({stopped})", file=sys.stderr, flush=True)
        finally:
            app.close()
            ui.stop()
    finally:
        if temporary:
            shutil.rmtree(settings.work_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``inpaint-anon ui ARGS`` / ``python -m inpaint_anon.ui ARGS``; returns the exit code: 0 when stopped
    (Ctrl-C, SIGTERM), 2 for a user error (one ``error:`` line)."""
    from inpaint_anon.run import hydra_command

    return hydra_command(_hydra_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    from inpaint_anon.ui import main as _main

    raise SystemExit(_main())
