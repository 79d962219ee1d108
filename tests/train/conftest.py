"""Fixtures for the trainer tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny: one thread avoids oversubscribing shared 2-core machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
