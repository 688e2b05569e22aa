"""The Stable Diffusion 1.5 CLIP tokenizer, offline.

SD-1.5 tokenizes prompts with the BPE tokenizer of ``openai/clip-vit-large-patch14`` (49408 tokens, 77-token
context, ``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407, also used for padding). Its ``vocab.json``
and ``merges.txt`` ship gzipped inside this package (``assets/clip_tokenizer/``, derived from OpenAI CLIP's
``bpe_simple_vocab_16e6.txt.gz``, MIT; see the README there), so no hub download is ever needed.

:func:`clip_tokenizer` unpacks them once into a cache folder and loads them with transformers' own
``CLIPTokenizer.from_pretrained(folder)``; the result tokenizes exactly like the hub tokenizer that diffusers
loads for SD-1.5.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from inpaint_anon.atomic import AtomicPath
from inpaint_anon.errors import ConfigError, InputError, WeightsError, one_line

logger = logging.getLogger(__name__)

CLIP_VOCAB_SIZE = 49408
CLIP_MODEL_MAX_LENGTH = 77
CLIP_BOS_TOKEN_ID = 49406
CLIP_EOS_TOKEN_ID = 49407
CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"

# Number of merges CLIP uses from the BPE file (49408 tokens = 256 bytes + 256 word-final bytes + merges + 2).
CLIP_NUM_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2
_MERGES_HEADER = "#version: 0.2"

# Packed data file -> name of the unpacked file transformers reads.
_PACKED_FILES = {"vocab.json.gz": "vocab.json", "merges.txt.gz": "merges.txt"}
_CACHE_ENV = "INPAINT_ANON_CACHE"


def _tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json of SD-1.5's tokenizer (the settings of ``openai/clip-vit-large-patch14``)."""
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_MODEL_MAX_LENGTH,
        "bos_token": CLIP_BOS_TOKEN,
        "eos_token": CLIP_EOS_TOKEN,
        "unk_token": CLIP_EOS_TOKEN,
        "pad_token": CLIP_EOS_TOKEN,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }


def asset_dir() -> Path:
    """Folder of the packaged tokenizer data (``inpaint_anon/assets/clip_tokenizer``)."""
    return Path(str(resources.files("inpaint_anon") / "assets" / "clip_tokenizer"))


def default_cache_dir() -> Path:
    """Root of inpaint_anon's user cache: ``$INPAINT_ANON_CACHE``, else ``$XDG_CACHE_HOME/inpaint_anon``,
    else ``~/.cache/inpaint_anon``."""
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "inpaint_anon"


def _assets_digest(folder: Path) -> str:
    """First 12 hex digits of the SHA-256 of the packed files: names the unpacked copy, so a package
    update never reuses a stale one."""
    digest = hashlib.sha256()
    for name in sorted(_PACKED_FILES):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:12]


def _write_unpacked(source: Path, target: Path) -> None:
    for packed, plain in _PACKED_FILES.items():
        with gzip.open(source / packed, "rb") as fin, open(target / plain, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    (target / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2), encoding="utf-8")


def materialize_clip_tokenizer(cache_dir: str | Path | None = None, *, rebuild: bool = False) -> Path:
    """Unpack the packaged tokenizer into ``<cache_dir>/clip_tokenizer-<digest>/`` and return that folder.

    cache_dir: root folder (default :func:`default_cache_dir`). The folder is written once, atomically (built
    in a temporary sibling and renamed), so concurrent runs never see a half-written tokenizer.
    rebuild: replace an existing copy (e.g. a damaged one).
    Raises ConfigError when the cache folder cannot be created or written.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    source = asset_dir()
    target = root / f"clip_tokenizer-{_assets_digest(source)}"
    expected = [*_PACKED_FILES.values(), "tokenizer_config.json"]
    if rebuild:
        shutil.rmtree(target, ignore_errors=True)
    elif all((target / name).is_file() for name in expected):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = AtomicPath(target, folder=True)
        try:
            os.chmod(staging.temp, 0o755)  # a cache may be shared
            _write_unpacked(source, staging.temp)
            staging.close()  # replaces an incomplete leftover (all files present was checked above)
        except OSError:
            staging.abort()
            if not all((target / name).is_file() for name in expected):  # not a lost race: a real failure
                raise
    except (OSError, InputError) as err:
        raise ConfigError(
            f"cannot write the CLIP tokenizer cache under {root} ({getattr(err, 'strerror', None) or err}); "
            f"pass a writable cache_dir or set {_CACHE_ENV} to a writable folder"
        ) from err
    return target


def clip_tokenizer(cache_dir: str | Path | None = None) -> Any:
    """SD-1.5's CLIP tokenizer (``transformers.CLIPTokenizer``), loaded offline from the packaged files.

    cache_dir: where the files are unpacked (see :func:`materialize_clip_tokenizer`); a damaged copy there is
    rebuilt once from the package.
    Returns a tokenizer with 49408 tokens, ``model_max_length`` 77, bos 49406, eos = pad 49407.
    Raises WeightsError when even a fresh copy does not load as the CLIP tokenizer (broken installation).
    """
    folder = materialize_clip_tokenizer(cache_dir)
    try:
        return _load_checked(folder)
    except ValueError as err:
        logger.warning("rebuilding the cached CLIP tokenizer in %s (%s)", folder, err)
    folder = materialize_clip_tokenizer(cache_dir, rebuild=True)
    try:
        return _load_checked(folder)
    except ValueError as err:
        raise WeightsError(
            f"the packaged CLIP tokenizer ({asset_dir()}) does not load ({err}); reinstall inpaint_anon"
        ) from err


def _load_checked(folder: Path) -> Any:
    """Load the tokenizer in ``folder``; ValueError (one line) when it fails or is not CLIP's."""
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(
            str(folder), model_max_length=CLIP_MODEL_MAX_LENGTH, local_files_only=True
        )
    except Exception as err:  # tokenizers/transformers raise many types for unreadable files
        raise ValueError(one_line(err, limit=10_000)) from err
    found = (len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    wanted = (CLIP_VOCAB_SIZE, CLIP_BOS_TOKEN_ID, CLIP_EOS_TOKEN_ID, CLIP_EOS_TOKEN_ID)
    if found != wanted:
        raise ValueError(f"size, bos, eos, pad = {found}, expected {wanted}")
    return tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters, in vocab
    order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def derive_clip_vocab_and_merges(bpe_simple_vocab_gz: str | Path) -> tuple[dict[str, int], list[str]]:
    """Build SD-1.5's ``vocab.json`` (token -> id) and ``merges.txt`` lines from OpenAI CLIP's
    ``bpe_simple_vocab_16e6.txt.gz`` (shipped by open_clip and openai/CLIP), the way CLIP's SimpleTokenizer
    does: the first 48894 merges; the vocab is the 256 byte symbols, the same with ``</w>``, one token per
    merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    with gzip.open(bpe_simple_vocab_gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : 1 + CLIP_NUM_MERGES]
    if len(merges) != CLIP_NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(
            f"{bpe_simple_vocab_gz} is not CLIP's BPE merges file (too short or malformed lines)"
        )
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += [CLIP_BOS_TOKEN, CLIP_EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_clip_tokenizer_assets(bpe_simple_vocab_gz: str | Path, out_dir: str | Path) -> list[Path]:
    """Regenerate the packaged ``vocab.json.gz`` and ``merges.txt.gz`` into ``out_dir`` (byte-reproducible:
    gzip level 9 with a zero timestamp). Returns the paths written."""
    vocab, merges = derive_clip_vocab_and_merges(bpe_simple_vocab_gz)
    texts = {
        "vocab.json.gz": json.dumps(vocab, ensure_ascii=False),
        "merges.txt.gz": "\n".join([_MERGES_HEADER, *merges]) + "\n",
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        path = out / name
        path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
        written.append(path)
    return written
