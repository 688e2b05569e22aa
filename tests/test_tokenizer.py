"""The packaged SD-1.5 CLIP tokenizer: ids, provenance (equal to open_clip's), packaging and its cache."""

from __future__ import annotations

import glob
import gzip
import json
import sys
from pathlib import Path

import open_clip.tokenizer as open_clip_tokenizer  # dev dependency: the reference the packaged files come from
import pytest

import inpaint_anon.tokenizer as tokenizer_module
from inpaint_anon.errors import ConfigError, WeightsError
from inpaint_anon.tokenizer import (
    asset_dir,
    clip_tokenizer,
    default_cache_dir,
    derive_clip_vocab_and_merges,
    materialize_clip_tokenizer,
    write_clip_tokenizer_assets,
)

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "inpaint_anon"

# Prompts transformers and open_clip normalise alike (NFC, whitespace, lower case).
PLAIN_PROMPTS = [
    "a photo of a person walking, different clothes, realistic, high quality",
    "Hello,   WORLD!! it's a car's wheel... (really?) [yes] {no} <maybe> a/b\\c @#$%^&*_+=~`|;:'\"",
    "café naïve Straße — 東京 🚗 Ünïcödé ÀÉÎÕÜ ñ ç ø å",
    "tabs\tand\nnewlines   and  spaces",
    "x" * 300,
    " ".join(["car"] * 100),  # truncated to 77 tokens
    "",
]
# Prompts open_clip rewrites first (ftfy.fix_text + html.unescape); equal after that same clean-up.
FTFY_PROMPTS = ["emoji’s “quotes”", "&amp; html &lt;b&gt;", "ﬁ ligature ＡＢＣ full-width"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return clip_tokenizer(tmp_path_factory.mktemp("cache"))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids


def test_is_the_sd15_clip_tokenizer(tokenizer):
    from transformers import CLIPTokenizer

    assert isinstance(tokenizer, CLIPTokenizer)
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert _ids(tokenizer, "a photo of a cat")[:8] == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]
    long_ids = _ids(tokenizer, " ".join(["car"] * 100))
    assert len(long_ids) == 77 and long_ids[-1] == 49407


@pytest.mark.parametrize("prompt", PLAIN_PROMPTS + FTFY_PROMPTS)
def test_ids_equal_open_clip(tokenizer, prompt):
    want = open_clip_tokenizer.tokenize([prompt])[0].tolist()  # pads with 0 after the eos
    end = want.index(49407) + 1
    text = prompt
    if prompt in FTFY_PROMPTS:
        assert _ids(tokenizer, prompt)[:end] != want[:end]  # documented difference, see assets README
        text = open_clip_tokenizer.whitespace_clean(open_clip_tokenizer.basic_clean(prompt))
    got = _ids(tokenizer, text)
    assert got[:end] == want[:end]
    assert set(got[end:]) <= {49407}


def test_packaged_files_equal_a_fresh_derivation_from_open_clip(tmp_path):
    for fresh in write_clip_tokenizer_assets(open_clip_tokenizer.default_bpe(), tmp_path):
        packaged = asset_dir() / fresh.name
        assert gzip.decompress(fresh.read_bytes()) == gzip.decompress(packaged.read_bytes()), fresh.name


def test_derivation_matches_open_clip_encoder():
    vocab, merges = derive_clip_vocab_and_merges(open_clip_tokenizer.default_bpe())
    reference = open_clip_tokenizer.SimpleTokenizer()
    assert len(vocab) == 49408 and len(merges) == 48894
    specials = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}
    assert all(reference.encoder[specials.get(token, token)] == i for token, i in vocab.items())


def test_derivation_rejects_other_files(tmp_path):
    path = tmp_path / "bpe.txt.gz"
    path.write_bytes(gzip.compress(b"#version: 0.2\na b\nc d\n"))
    with pytest.raises(ValueError, match="not CLIP's BPE merges file"):
        derive_clip_vocab_and_merges(path)


def test_assets_are_small_and_documented():
    folder = asset_dir()
    assert folder == PACKAGE / "assets" / "clip_tokenizer"
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"vocab.json.gz", "merges.txt.gz", "README.md", "LICENSE"} <= set(sizes)
    assert 400_000 < sizes["vocab.json.gz"] + sizes["merges.txt.gz"] < 700_000
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "bpe_simple_vocab_16e6.txt.gz" in readme and "MIT" in readme
    assert "OpenAI" in (folder / "LICENSE").read_text(encoding="utf-8")


def test_readme_checksums_match_the_unpacked_files(tmp_path):
    import hashlib

    readme = (asset_dir() / "README.md").read_text(encoding="utf-8")
    folder = materialize_clip_tokenizer(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in readme, name


def test_assets_are_declared_package_data():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: tomli is optional there
        tomllib = pytest.importorskip("tomli", reason="Python 3.10 has no tomllib and tomli is not installed")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["inpaint_anon"]
    declared = {
        Path(match)
        for pattern in patterns
        for match in glob.glob(pattern, root_dir=PACKAGE, recursive=True)
        if (PACKAGE / match).is_file()
    }
    assets = {p.relative_to(PACKAGE) for p in asset_dir().iterdir() if p.is_file()}
    assert assets and assets <= declared


def test_unpacked_once_into_a_versioned_folder_and_reused(tmp_path):
    folder = materialize_clip_tokenizer(tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith("clip_tokenizer-")
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 77
    stamp = (folder / "vocab.json").stat().st_mtime_ns
    assert materialize_clip_tokenizer(tmp_path) == folder
    assert (folder / "vocab.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no staging leftovers


def test_incomplete_copy_is_rebuilt(tmp_path):
    folder = materialize_clip_tokenizer(tmp_path)
    (folder / "merges.txt").unlink()
    assert materialize_clip_tokenizer(tmp_path) == folder
    assert (folder / "merges.txt").stat().st_size > 400_000


def test_damaged_copy_is_rebuilt(tmp_path):
    folder = materialize_clip_tokenizer(tmp_path)
    (folder / "vocab.json").write_text("{}")
    assert len(clip_tokenizer(tmp_path)) == 49408


def test_broken_package_data_is_a_weights_error(tmp_path, monkeypatch):
    broken = tmp_path / "assets"
    broken.mkdir()
    (broken / "vocab.json.gz").write_bytes(gzip.compress(b'{"a": 0}'))
    (broken / "merges.txt.gz").write_bytes(gzip.compress(b"#version: 0.2\n"))
    monkeypatch.setattr(tokenizer_module, "asset_dir", lambda: broken)
    with pytest.raises(WeightsError, match="reinstall inpaint_anon"):
        clip_tokenizer(tmp_path / "cache")


def test_unwritable_cache_is_a_config_error(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(ConfigError, match="INPAINT_ANON_CACHE"):
        clip_tokenizer(not_a_folder / "cache")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("INPAINT_ANON_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "inpaint_anon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "inpaint_anon"


def test_default_cache_is_used_without_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path))
    assert materialize_clip_tokenizer().parent == tmp_path


@pytest.mark.slow
def test_wheel_ships_the_assets(tmp_path):
    """Build the wheel from a copy of the sources (no network: the venv's setuptools; nothing written into
    the checkout) and look for the tokenizer files in it."""
    import shutil
    import subprocess
    import zipfile

    source = tmp_path / "src"
    shutil.copytree(PACKAGE, source / "inpaint_anon", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*command, str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("inpaint_anon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("vocab.json.gz", "merges.txt.gz", "README.md", "LICENSE"):
        assert f"inpaint_anon/assets/clip_tokenizer/{name}" in names
