"""Shared test fixtures: a fresh Pyro parameter store and fixed seeds for every test."""

from pathlib import Path

import pyro
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)  # tiny models: more threads only contend on 2 cores
    yield
    pyro.clear_param_store()
