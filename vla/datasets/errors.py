"""The one exception our dataset tools raise for bad input, so that every command can print it without a traceback.

A `DatasetError` names what was wrong, where (a file, an episode, a frame, a feature) and what to do about it. Code
that touches files (parquet, video, PNG, zarr) converts the library's own exception into one at the place where
the path is known; `vla data ...` prints the message and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DatasetError(Exception):
    """Bad dataset input. `str(err)` reads "<where>: <what>. <fix>"."""

    def __init__(self, where: str | Path, what: str, fix: str = ""):
        self.where, self.what, self.fix = str(where), what, fix
        super().__init__(f"{where}: {what}" + (f". {fix}" if fix else ""))


@contextmanager
def reading(path: str | Path, fix: str = "run `vla data check` on the dataset to see every problem") -> Iterator[None]:
    """Turn any exception raised while reading `path` into a `DatasetError` naming the file."""
    try:
        yield
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(path, "file is missing", fix) from None
    except Exception as err:  # pyarrow, av, PIL and zarr raise many types for a damaged file
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise DatasetError(path, f"cannot be read ({type(err).__name__}: {first_line}); truncated or damaged?",
                           fix) from None

