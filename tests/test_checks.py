"""The package's one set of value validators (inpaint_anon/checks.py), its one one-line error formatter
(inpaint_anon/errors.py) and its one versions table."""

from __future__ import annotations

import platform
from importlib import metadata

import pytest

from inpaint_anon import checks, composite
from inpaint_anon.checks import check_bool, check_float, check_int
from inpaint_anon.errors import ConfigError, one_line
from inpaint_anon.versions import VERSIONED_PACKAGES, versions


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_returns_booleans(value: bool) -> None:
    assert check_bool("keep_metadata", value) is value


@pytest.mark.parametrize("value", ["no", "false", "False", "yes", "true", "maybe", "", 0, 1, None, 0.0, [True]])
def test_check_bool_refuses_everything_else(value: object) -> None:
    """Any non-empty string is truthy in Python: `keep_metadata=no` kept the GPS tags it asked to strip."""
    with pytest.raises(ConfigError) as error:
        check_bool("keep_metadata", value)
    assert str(error.value) == (f"keep_metadata={value!r} is not a boolean; write keep_metadata=true or "
                                "keep_metadata=false (unquoted)")


def test_check_int_and_float_name_the_setting_and_range() -> None:
    assert check_int("Tracker", "max_gap", 3, 0, 10) == 3
    value = check_float("BlurInpainter", "strength", 2, 0.05, 10.0)
    assert value == 2.0 and type(value) is float
    with pytest.raises(ConfigError, match=r"^Tracker max_gap=True is invalid; use an integer from 0 to 10$"):
        check_int("Tracker", "max_gap", True, 0, 10)
    with pytest.raises(ConfigError, match=r"^strength='2' is invalid; use a number from 0 to 3$"):
        check_float("", "strength", "2", 0, 3)
    assert composite.check_int is checks.check_int and composite.check_float is checks.check_float  # re-exported


def test_detector_half_must_be_a_boolean() -> None:
    from inpaint_anon.detect.yolo_seg import YoloSegDetector

    with pytest.raises(ConfigError, match="^detector.half='no' is not a boolean"):
        YoloSegDetector("yolov8n-seg.yaml", imgsz=64, device="cpu", half="no")  # type: ignore[arg-type]


def test_allow_ckpt_must_be_a_boolean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`inpainter.allow_ckpt=no` was truthy: it would have loaded a pickle checkpoint."""
    from inpaint_anon.weights import load_sd_components

    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not loaded")
    with pytest.raises(ConfigError, match="^inpainter.allow_ckpt='no' is not a boolean"):
        load_sd_components(str(checkpoint), device="cpu", allow_ckpt="no")  # type: ignore[arg-type]


def test_versions_table() -> None:
    table = versions()
    assert table["python"] == platform.python_version()
    assert table["torch"] == metadata.version("torch") and table["hydra-core"] == metadata.version("hydra-core")
    assert set(table) - {"python"} <= set(VERSIONED_PACKAGES)


def test_one_line_is_type_and_first_line_cut_to_the_limit() -> None:
    assert one_line(OSError("Name or service not known\nsecond line")) == "OSError: Name or service not known"
    assert one_line(RuntimeError()) == one_line(RuntimeError("  \n ")) == "RuntimeError"
    assert one_line("  left nearly unchanged\nmore") == "left nearly unchanged" and one_line("") == "no message"
    long = one_line(ValueError("x" * 300))
    assert len(long) == 200 and long == "ValueError: " + "x" * 185 + "..."
    assert one_line(ValueError("x" * 300), limit=20) == "ValueError: xxxxx..."
