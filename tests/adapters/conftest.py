"""Fixtures for the adapter library's tests."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _tiny_models_on_one_thread(one_thread):
    yield
