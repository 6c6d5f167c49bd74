"""Shared fixtures: a small demo data set built once per session, and the real-data locations."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from mer_utils.config import PACKAGE_PARENT
from mer_utils.workers import default_threads, thread_environment

# Under pytest-xdist (make test) each worker process gets its share of the cores as math threads
# (TensorFlow, BLAS, CTranslate2), so two workers on two cores do not fight over them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.update(thread_environment(default_threads(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# Real data for development lives beside the checkout (never inside it); MER_REAL_DATA overrides.
REAL_DATA = Path(os.environ.get("MER_REAL_DATA", PACKAGE_PARENT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A 4-actor demo data set (120 clips), generated once for the whole test session."""
    from mer_utils.demo import make_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, actors=4, seed=7)
    return out


@pytest.fixture(scope="session")
def real_audio_dir() -> Path:
    """The real RAVDESS audio-only folder; tests using it skip when it is absent."""
    path = REAL_DATA / "ravdess_speech_16k"
    if not path.is_dir():
        pytest.skip(f"real RAVDESS audio not found at {path}")
    return path


@pytest.fixture(scope="session")
def real_text_csv() -> Path:
    """The real text emotion CSV; tests using it skip when it is absent."""
    path = REAL_DATA / "text" / "emotion_dataset_raw.csv"
    if not path.is_file():
        pytest.skip(f"real text CSV not found at {path}")
    return path


@pytest.fixture()
def loopback_server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving a temporary folder: (folder, URL template with {name})."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/{{name}}"
    finally:
        server.shutdown()
        server.server_close()


def pytest_collection_modifyitems(items):
    """The notebook tests first: under pytest-xdist their file is the longest unit of work, so it starts
    at once on one worker while the other takes the many short files."""
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is None)
