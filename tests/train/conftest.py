"""Fixtures for the trainer tests (the small base ``base_dir`` is in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _tiny_models_on_one_thread(one_thread):
    yield
