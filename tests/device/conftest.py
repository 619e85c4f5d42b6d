"""Fixtures of the device tests: device OS images and one compiled package per device, each made once a session."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import neocompile
from neocompile.device import images
from neocompile.targets import get_target
from tests.models import SMALL_CONFIG, small_onnx_archive


@pytest.fixture(scope="session")
def image_roots():
    """Each distinct test image of the registry, built once (about 20 s each) and cached."""
    roots: dict[str, Path] = {}

    def get(image: dict) -> Path:
        key = json.dumps(image, sort_keys=True)
        if key not in roots:
            try:
                roots[key] = images.ensure_image(image)
            except images.ImageUnavailable as exc:
                pytest.fail(f"device OS image {image} is unavailable: {exc}", pytrace=False)
        return roots[key]

    return get


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    return small_onnx_archive(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def packages(archive, tmp_path_factory):
    """One compiled, extracted package per device (compiled on first use)."""
    built: dict[str, tuple[Path, dict]] = {}

    def get(name: str) -> tuple[Path, dict]:
        if name not in built:
            out = tmp_path_factory.mktemp(f"out-{name}")
            result = neocompile.compile_model(model_uri=str(archive), framework="ONNX", output_location=str(out),
                                              data_input_config=SMALL_CONFIG, target_device=name)
            folder = out / "pkg"
            with tarfile.open(result.artifact_uri) as tar:
                tar.extractall(folder, filter="data")
            built[name] = (folder, result.meta)
        return built[name]

    return get


@pytest.fixture(scope="session")
def python_roots():
    """Each device's Python image, built once (1-2 minutes each) and cached beside its plain image."""
    roots: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in roots:
            try:
                roots[name] = images.ensure_python_image(get_target(name).os["test_image"])
            except images.ImageUnavailable as exc:
                pytest.fail(f"Python device image for {name} is unavailable: {exc}", pytrace=False)
        return roots[name]

    return get
