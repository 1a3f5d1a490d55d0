"""Fixtures of the manifest tests: both overlays rendered once per session (`rendered`), and
each overlay's objects in turn (`objects`, with its name as `overlay`). Helpers are in
tests/support/k8s.py; the model store and server launchers come from tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.support.k8s import OVERLAYS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Overlay -> its rendered objects. Shared: a test that edits one edits a deep copy."""
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def objects(rendered, overlay) -> list[dict]:
    return rendered[overlay]
