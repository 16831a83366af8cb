"""Fixtures for the data-layer tests (bag writing lives in data_fixtures.py)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from .data_fixtures import BagSpec, BagTruth, write_bag


@pytest.fixture
def make_bag(tmp_path: Path) -> Callable[..., BagTruth]:
    """make_bag(name="bag", **BagSpec fields) writes a synthetic bag folder under tmp_path."""

    def make(name: str = "bag", **fields) -> BagTruth:
        return write_bag(tmp_path / name, BagSpec(**fields))

    return make
