"""Shared fixtures: paths to ../shared, optional backends, and session-scoped trained artefacts."""
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL = SHARED / "data" / "real"


@pytest.fixture(scope="session")
def shared_docs():
    docs = SHARED / "docs"
    if not docs.is_dir():
        pytest.skip("../shared/docs is absent in this checkout")
    return docs


@pytest.fixture(scope="session")
def real_data():
    if not REAL.is_dir():
        pytest.skip("../shared/data/real is absent: real Cityscapes/CamVid files are not in this checkout")
    return REAL


@pytest.fixture(scope="session")
def ort():
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'sanet[onnx]'")
