"""The web UI (inpaint_anon.ui): a server on a free loopback port, driven through gradio_client; the browser test
(``pytest -m browser``) drives it through headless Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inpaint_anon.detect import ScriptedDetector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.ui import AnonymizeUI, Choice, UIComponents, UISettings, build_app, launch

ROOT = Path(__file__).resolve().parents[1]
FACE_BOX = (181, 75, 270, 171)  # x0, y0, x1, y1 of the astronaut's face (data/faces_gt.jsonl)
SCREENSHOT = ROOT / "evaluation" / "bench" / "results" / "ui_screenshot.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def face_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = FACE_BOX
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def astronaut(tmp_path: Path) -> Path:
    """data/astronaut.jpg as a lossless .png (an unchanged pixel then reads back exactly)."""
    path = tmp_path / "astronaut.png"
    Image.open(ROOT / "data" / "astronaut.jpg").convert("RGB").save(path)
    return path


def components(**kwargs: object) -> UIComponents:
    """A scripted face at FACE_BOX in every frame (512x512 frames); no tracker, CPU."""
    detector = ScriptedDetector(lambda i: {"face": face_mask(512, 512)}, names=["face"])
    return UIComponents(detector=detector, device="cpu", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, AnonymizeUI]]:
    """The UI on a free loopback port (stopped after the test), its work folder in tmp_path."""
    saved = os.environ.get("GRADIO_TEMP_DIR")
    app, ui = build_app(components(), UISettings(tmp_path / "work", keep_minutes=5, max_upload_mb=20))
    port = free_port()
    launch(app, ui, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", ui
    finally:
        ui.stop()
        app.close()
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved


def check_anonymized(before_path: Path, after_path: Path) -> None:
    """The face box changed a lot; the pixels well away from it (past dilation and feathering) are unchanged."""
    before = np.asarray(Image.open(before_path).convert("RGB")).astype(np.int16)
    after = np.asarray(Image.open(after_path).convert("RGB")).astype(np.int16)
    assert after.shape == before.shape == (512, 512, 3)
    x0, y0, x1, y1 = FACE_BOX
    inner = np.abs(after[y0 + 10:y1 - 10, x0 + 10:x1 - 10] - before[y0 + 10:y1 - 10, x0 + 10:x1 - 10])
    assert inner.mean() > 8.0
    far = np.ones((512, 512), dtype=bool)
    far[y0 - 40:y1 + 40, x0 - 40:x1 + 40] = False
    assert np.array_equal(after[far], before[far])


def test_image_through_gradio_client(server: tuple[str, AnonymizeUI], astronaut: Path, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    url, ui = server
    client = Client(url, download_files=str(tmp_path / "downloads"), verbose=False)
    slider, download, info = client.predict(handle_file(str(astronaut)), 1.0, 8, 1.0, "pixelate", api_name="/image")
    check_anonymized(astronaut, Path(download))
    assert Path(slider[1]).read_bytes() == Path(download).read_bytes()
    assert info.startswith("1 frame(s) in ")
    # what the server kept: the upload under a uuid name, the result in results/<uuid>/, both in its work folder
    uploads = list((ui.work_dir / "uploads").iterdir())
    assert len(uploads) == 1 and len(uploads[0].stem) == 32 and uploads[0].suffix == ".png"
    results = list((ui.work_dir / "results").glob("*/anonymized.png"))
    assert len(results) == 1
    assert results[0].read_bytes() == Path(download).read_bytes()


def test_server_serves_no_file_outside_its_work_folder(server: tuple[str, AnonymizeUI], tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    url, ui = server
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    for path in (secret, ROOT / "README.md"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10)
        assert refused.value.code in (403, 404)


def test_video_through_gradio_client(server: tuple[str, AnonymizeUI], tmp_path: Path) -> None:
    """A video comes back as H.264 yuv420p in .mp4 with every frame, its face region changed."""
    import av
    from gradio_client import Client, handle_file

    from tests.clips import make_clip

    clip = make_clip(tmp_path / "in.mp4", size=(512, 512), n_frames=6)
    client = Client(server[0], download_files=str(tmp_path / "downloads"), verbose=False)
    before, after, download, info = client.predict(handle_file(str(clip)), 2.0, 8, 1.0, "blur", api_name="/video")
    with av.open(str(download)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(stream)]
    with av.open(str(clip)) as container:
        originals = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    assert len(frames) == len(originals) == 6
    x0, y0, x1, y1 = FACE_BOX
    assert np.abs(frames[0][y0:y1, x0:x1] - originals[0][y0:y1, x0:x1]).mean() > 2.0
    assert info.startswith("6 frame(s) in ")
    # +faststart: the moov atom comes before the media data
    data = Path(download).read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_progress_bar_follows_the_pipeline(tmp_path: Path) -> None:
    """The page's progress bar is the pipeline's tqdm bar (updated from its encode thread): frames done of all."""
    from gradio_client import Client, handle_file

    from tests.clips import make_clip

    def slow_face(index: int) -> dict[str, np.ndarray]:
        time.sleep(0.05)
        mask = np.zeros((120, 160), dtype=bool)
        mask[30:70, 40:90] = True
        return {"face": mask}

    detector = ScriptedDetector(slow_face, names=["face"], batch_size=1)
    app, ui = build_app(UIComponents(detector=detector, device="cpu", batch_frames=1, queue_size=1),
                        UISettings(tmp_path / "work"))
    port = free_port()
    launch(app, ui, "127.0.0.1", port, block=False)
    try:
        clip = make_clip(tmp_path / "in.mp4", n_frames=40)
        job = Client(f"http://127.0.0.1:{port}/", verbose=False).submit(handle_file(str(clip)), 1.0, 8, 1.0, "blur",
                                                                        api_name="/video")
        seen = set()
        while not job.done():
            for unit in job.status().progress_data or []:
                seen.add((unit.index, unit.length, unit.unit, unit.desc))
            time.sleep(0.05)
        job.result()
    finally:
        ui.stop()
        app.close()
    assert {(length, unit, desc) for _, length, unit, desc in seen} == {(40, "frame", "anonymize")}
    assert any(0 < index < 40 for index, *_ in seen)


def test_errors_reach_the_page_as_one_line(server: tuple[str, AnonymizeUI], tmp_path: Path) -> None:
    """A broken upload: the page shows the reader's one-line InputError, and no result is left behind."""
    from gradio_client import Client, handle_file

    url, ui = server
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match=r"\.mp4: not a video or image, or truncated or corrupt .*re-export it"):
        client.predict(handle_file(str(broken)), 1.0, 8, 1.0, "blur", api_name="/video")
    assert [p for p in (ui.work_dir / "results").rglob("*") if p.is_file()] == []


def test_inpainter_per_class_and_strength(tmp_path: Path) -> None:
    from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter
    from inpaint_anon.inpaint.router import ClassRouter

    detector = ScriptedDetector(lambda i: {}, names=["face", "plate", "person"])
    ui = AnonymizeUI(UIComponents(detector=detector, device="cpu"), UISettings(tmp_path))
    router = ui.inpainter(Choice({"face": "blur", "plate": "pixelate", "person": "none"}, blur_strength=2.5,
                                 pixelate_blocks=5))
    assert isinstance(router, ClassRouter)
    face, plate = router.methods["face"], router.methods["plate"]
    assert isinstance(face, BlurInpainter) and face.strength == 2.5
    assert isinstance(plate, PixelateInpainter) and plate.blocks == 5
    assert router.methods["person"] is None
    with pytest.raises(ConfigError, match="method 'diffusion' is not offered here; choose one of: blur, pixelate, "
                                          "solid, none"):
        ui.inpainter(Choice({"face": "diffusion"}))
    with pytest.raises(ConfigError, match="class 'car' is not detected here; classes: face, plate, person"):
        ui.inpainter(Choice({"car": "blur"}))


def test_uploads_get_uuid_names_and_cleanup_deletes_old_files(tmp_path: Path, astronaut: Path) -> None:
    ui = AnonymizeUI(components(), UISettings(tmp_path / "work", keep_minutes=1))
    saved = ui.save_upload(astronaut, (".png",))
    assert saved.parent == ui.work_dir / "uploads" and saved.name != astronaut.name and saved.suffix == ".png"
    with pytest.raises(InputError, match=r"astronaut\.png: \.png is not accepted here; upload one of: \.zip"):
        ui.save_upload(astronaut, (".zip",))
    result = ui.result_dir()
    (result / "anonymized.png").write_bytes(b"x")
    fresh = ui.save_upload(astronaut, (".png",))
    old = time.time() - 120
    os.utime(saved, (old, old))
    os.utime(result, (old, old))
    assert sorted(ui.cleanup()) == sorted([saved, result])
    assert not saved.exists() and not result.exists() and fresh.exists()


def test_keep_minutes_and_upload_limit_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keep_minutes=0 must be > 0"):
        UISettings(tmp_path, keep_minutes=0)
    with pytest.raises(ConfigError, match=r"max_upload_mb=-1 must be > 0"):
        UISettings(tmp_path, max_upload_mb=-1)


class FakeWhitelist:
    """Stands in for inpaint_anon.whitelist.Whitelist (its interface: from_folder, people)."""

    calls: list[tuple[Path, object, object, Path | None]] = []

    def __init__(self, people: list[str]) -> None:
        self.people = people

    @classmethod
    def from_folder(cls, folder: Path, embedder: object, face_detector: object, *,
                    cache_dir: Path | None = None) -> FakeWhitelist:
        cls.calls.append((Path(folder), embedder, face_detector, cache_dir))
        return cls(sorted(p.name for p in Path(folder).iterdir() if any(p.iterdir())))


def test_whitelist_photos_saved_under_uuid_names(tmp_path: Path, astronaut: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "inpaint_anon.whitelist", types.SimpleNamespace(Whitelist=FakeWhitelist))
    loads = []
    ui = AnonymizeUI(components(embedder=lambda: loads.append("embedder") or "EMB",
                                face_detector=lambda: loads.append("faces") or "FD"), UISettings(tmp_path / "w"))
    assert ui.add_person("Ada Lovelace", [astronaut]) == ["Ada Lovelace"]
    assert ui.add_person("bob", [astronaut, astronaut]) == ["Ada Lovelace", "bob"]
    assert loads == ["embedder", "faces"]  # loaded once, on first use
    folder, embedder, faces, cache = FakeWhitelist.calls[-1]
    assert (folder, embedder, faces, cache) == (ui.work_dir / "whitelist", "EMB", "FD", ui.work_dir / "whitelist_cache")
    photos = sorted((ui.work_dir / "whitelist" / "bob").iterdir())
    assert len(photos) == 2 and all(len(p.stem) == 32 and p.suffix == ".png" for p in photos)
    assert ui.people() == ["Ada Lovelace", "bob"]
    assert [(Path(photo).parent.name, name) for photo, name in ui.gallery()] == [("Ada Lovelace", "Ada Lovelace"),
                                                                                  ("bob", "bob")]
    for bad in ("../evil", ".hidden", "a/b", ""):
        with pytest.raises(InputError, match="is not a plain name; use letters, digits, spaces, _ or -"):
            ui.add_person(bad, [astronaut])
    assert sorted(p.name for p in (ui.work_dir / "whitelist").iterdir()) == ["Ada Lovelace", "bob"]
    # a photo the whitelist refuses (no face, say) leaves the folder: the others stay usable
    def refuse(cls: type, *args: object, **kwargs: object) -> FakeWhitelist:
        raise InputError("no face found in the photo; upload a sharper one")

    monkeypatch.setattr(FakeWhitelist, "from_folder", classmethod(refuse))
    with pytest.raises(InputError, match="no face found in the photo"):
        ui.add_person("carol", [astronaut])
    with pytest.raises(InputError, match="no face found in the photo"):
        ui.add_person("bob", [astronaut])
    assert sorted(p.name for p in (ui.work_dir / "whitelist").iterdir()) == ["Ada Lovelace", "bob"]
    assert len(list((ui.work_dir / "whitelist" / "bob").iterdir())) == 2
    assert ui.people() == ["Ada Lovelace", "bob"]


def test_folder_zip_goes_through_run_batch(tmp_path: Path, astronaut: Path) -> None:
    """The Folder tab runs inpaint_anon.batch.run_batch on the uploaded zip (saved under a uuid name), with one
    pipeline per file, and zips what it wrote; a broken file in the middle is listed as failed, the rest done."""
    upload = tmp_path / "my photos.zip"
    with zipfile.ZipFile(upload, "w") as packed:
        packed.write(astronaut, "a.png")
        packed.writestr("sub/broken.png", b"not a png")
    ui = AnonymizeUI(components(), UISettings(tmp_path / "work"))
    archive, record = ui.run_folder(upload, Choice({"face": "solid"}))
    assert (record["done"], record["failed"]) == (1, 1)
    failed = [f for f in record["files"] if f["status"] == "failed"]
    assert [f["source"] for f in failed] == ["sub/broken.png"] and failed[0]["reason"]
    assert not list((ui.work_dir / "uploads").glob("my photos*"))  # stored under a uuid name
    with zipfile.ZipFile(archive) as packed:
        assert packed.namelist() == ["a.png"]
        packed.extract("a.png", tmp_path / "back")
    check_anonymized(astronaut, tmp_path / "back" / "a.png")
    x0, y0, x1, y1 = FACE_BOX
    assert np.asarray(Image.open(tmp_path / "back" / "a.png"))[y0 + 20:y1 - 20, x0 + 20:x1 - 20].max() == 0


@pytest.mark.parametrize(("args", "message"), [
    (["port=http"], "error: port='http' is not a TCP port; pass port=7860 (1..65535)"),
    (["keep_minutes=0", "detector=centerface"], "error: keep_minutes=0 must be > 0"),
    (["inpainter=scramble", "detector=centerface"], "error: the web UI does not scramble"),
])
def test_cli_errors(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """One error line, exit 2, and no work folder left behind."""
    import tempfile

    from inpaint_anon.run import main

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert main(["ui", f"paths.experiments={tmp_path}", *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_cli_server_with_centerface(tmp_path: Path, astronaut: Path) -> None:
    """``python -m inpaint_anon.ui detector=centerface``: the Hydra entry builds the shipped face detector once and
    anonymizes the astronaut's face; SIGTERM stops it and removes its temporary work folder."""
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "inpaint_anon.ui", "detector=centerface", "device=cpu",
                               f"port={port}", f"paths.experiments={tmp_path / 'exp'}", "tracker=none"],
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the UI server did not start in 120 s"
                time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", download_files=str(tmp_path / "dl"), verbose=False)
        _, download, _ = client.predict(handle_file(str(astronaut)), 1.0, 8, 1.0, "solid", api_name="/image")
        after = np.asarray(Image.open(download).convert("RGB"))
        x0, y0, x1, y1 = FACE_BOX
        assert after[y0 + 25:y1 - 25, x0 + 25:x1 - 25].max() == 0  # the face centre is solid black
        work = [p for p in tmp_path.glob("inpaint_anon_ui_*")]
        assert len(work) == 1
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode == 0  # stopping is a server's normal end
    assert not any(tmp_path.glob("inpaint_anon_ui_*"))


@pytest.mark.browser
def test_browser_upload_and_download(server: tuple[str, AnonymizeUI], astronaut: Path, tmp_path: Path) -> None:
    """Headless Chromium: upload the astronaut, press the button, download the result, save a screenshot."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "browser_downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options)
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(server[0])
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        upload.send_keys(str(astronaut))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "img")))
        driver.find_element(By.XPATH, "//button[contains(., 'Anonymize image')]").click()
        link = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "a[download]")))
        driver.execute_script("arguments[0].scrollIntoView();", link)
        link.click()
        deadline = time.monotonic() + 60
        while not [p for p in downloads.iterdir() if p.suffix == ".png"]:
            assert time.monotonic() < deadline, "no download arrived"
            time.sleep(0.2)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
    (result,) = [p for p in downloads.iterdir() if p.suffix == ".png"]
    check_anonymized(astronaut, result)
    assert SCREENSHOT.stat().st_size > 10_000


def test_diffusion_strength_per_request(tmp_path: Path) -> None:
    """With a diffusion model loaded, ``diffusion`` is offered and each request sets its strength."""
    from tests.test_fail_closed import tiny_diffusion

    diffusion = tiny_diffusion(steps=4)
    ui = AnonymizeUI(components(diffusion=diffusion), UISettings(tmp_path))
    assert ui.components.offered == ["blur", "pixelate", "solid", "diffusion", "none"]
    router = ui.inpainter(Choice({"face": "diffusion"}, diffusion_strength=0.5))
    assert router.methods["face"] is diffusion and diffusion.strength == 0.5
    with pytest.raises(ConfigError, match="diffusion strength 0.2 leaves no denoising step of 4; raise it"):
        ui.inpainter(Choice({"face": "diffusion"}, diffusion_strength=0.2))
