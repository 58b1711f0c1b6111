"""LeRobot's 80-line warning where torchcodec cannot load is said in one line (vla/__init__.py)."""

from __future__ import annotations

import logging

import pytest

import vla

REPORT = ("Could not load libtorchcodec. Likely causes:\n" + "Traceback ...\n" * 60
          + "'torchcodec' is installed but cannot be loaded (see the error above). Falling back to 'pyav' as a default "
          "decoder.")  # fmt: skip


@pytest.mark.parametrize("debug", [False, True])
def test_the_torchcodec_fallback_is_one_line_unless_debugging(debug: bool, caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("VLA_DEBUG", "1" if debug else "0")
    with caplog.at_level(logging.WARNING, logger=vla.TORCHCODEC_LOGGER):
        logging.getLogger(vla.TORCHCODEC_LOGGER).warning("%s", REPORT)
        logging.getLogger(vla.TORCHCODEC_LOGGER).warning("another warning\nof two lines")
    first, other = (record.getMessage() for record in caplog.records)
    assert first == REPORT if debug else ("\n" not in first and "PyAV instead" in first)
    assert other == "another warning\nof two lines"  # only that report is shortened
