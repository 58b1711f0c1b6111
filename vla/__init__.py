"""The VLA control stack. Importing it shortens one LeRobot warning (below); everything else lives in the
subpackages."""

from __future__ import annotations

import logging
import os

TORCHCODEC_LOGGER = "lerobot.utils.import_utils"


class _OneLineTorchcodecWarning(logging.Filter):
    """Where torchcodec is installed but cannot load (it needs FFmpeg's shared libraries, which pip cannot install),
    LeRobot logs the whole loading traceback, about 80 lines, before falling back to PyAV, which works: on every
    `vla demo`, `vla train` and `lerobot-train`. Say it in one line; `VLA_DEBUG=1` keeps LeRobot's report."""

    def filter(self, record: logging.LogRecord) -> bool:
        debug = os.environ.get("VLA_DEBUG") == "1"
        if not debug and "'torchcodec' is installed but cannot be loaded" in record.getMessage():
            record.msg, record.args = ("torchcodec cannot load here (FFmpeg's shared libraries are missing or do "
                                       "not match; VLA_DEBUG=1 shows why): video decodes with PyAV instead"), ()
        return True


logging.getLogger(TORCHCODEC_LOGGER).addFilter(_OneLineTorchcodecWarning())
