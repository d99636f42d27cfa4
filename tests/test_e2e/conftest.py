"""Tiny generated demo data shared by the end-to-end tests."""
from pathlib import Path

import pytest


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory) -> Path:
    from mmsa.demo_data import generate
    root = tmp_path_factory.mktemp('demo_data')
    generate(str(root), num_train=16, num_val=8, seed=1, size=(128, 128))
    return root
