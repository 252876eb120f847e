"""The service copies a spooled upload byte for byte, whatever the spool holds it in."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest
from starlette.datastructures import UploadFile

from casegraph.retrieval.service import _copy_upload


@pytest.mark.parametrize("size", [0, 10, (1 << 20) + 3, 3 * (1 << 20)])
def test_spooled_upload_copied_exactly(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool, \
            open(tmp_path / "out.h5", "xb") as out:  # Starlette's spool size
        spool.write(data)
        spool.seek(0)
        _copy_upload(UploadFile(spool, filename="a.h5"), out)  # type: ignore[arg-type]
    assert (tmp_path / "out.h5").read_bytes() == data


def test_upload_without_a_file_descriptor_is_copied_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(2 * (1 << 20) + 5)
    with open(tmp_path / "out.h5", "xb") as out:
        _copy_upload(UploadFile(io.BytesIO(data), filename="a.h5"), out)  # type: ignore[arg-type]
    assert (tmp_path / "out.h5").read_bytes() == data
