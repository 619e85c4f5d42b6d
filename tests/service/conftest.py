"""Fixtures of the job-service tests: a real `neocompile serve` over each store, a throwaway PostgreSQL cluster,
compiled packages for batch transform."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.service.apiserver import ApiProcess
from tests.service.pg import postgres_db, postgres_url  # noqa: F401  (a throwaway PostgreSQL cluster)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "model.tar.gz"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> str | None:
    """The job store of the server under test: None (SQLite in its data dir) or a fresh PostgreSQL database."""
    return request.getfixturevalue("postgres_db") if request.param == "postgres" else None


@pytest.fixture
def model_uri(s3_env, s3_server) -> str:
    s3_server.client().upload_file(str(EXAMPLE), s3_env, "in/model.tar.gz")
    return f"s3://{s3_env}/in/model.tar.gz"


@pytest.fixture
def api(tmp_path, store, s3_env):
    server = ApiProcess(tmp_path / "data", store=store, workers=1).start()
    yield server
    server.stop()


@pytest.fixture
def api_only(tmp_path, store):
    """A server without workers: jobs stay STARTING (listing, validation, races)."""
    server = ApiProcess(tmp_path / "data", store=store, workers=0).start()
    yield server
    server.stop()




@pytest.fixture(scope="session")
def xgb_package(tmp_path_factory):
    """An XGBoost binary classifier (6 features) compiled for ml_c4, and its booster (the reference)."""
    import neocompile
    from tests import xgboost_models

    tmp = tmp_path_factory.mktemp("xgb-package")
    booster = xgboost_models.train("binary:logistic")
    booster.save_model(str(tmp / "xgboost-model.json"))
    with tarfile.open(tmp / "xgb.tar.gz", "w:gz") as tar:
        tar.add(tmp / "xgboost-model.json", arcname="xgboost-model.json")
    result = neocompile.compile_model(str(tmp / "xgb.tar.gz"), "XGBOOST", str(tmp / "out"), target_device="ml_c4")
    return Path(result.artifact_uri), booster


@pytest.fixture(scope="session")
def cnn_package(tmp_path_factory) -> Path:
    """A small image classifier (input data [1, 3, 32, 32]) compiled for ml_c4."""
    import neocompile
    from tests.models import SMALL_CONFIG, small_onnx_archive

    tmp = tmp_path_factory.mktemp("cnn-package")
    result = neocompile.compile_model(str(small_onnx_archive(tmp)), "ONNX", str(tmp / "out"), SMALL_CONFIG,
                                      target_device="ml_c4")
    return Path(result.artifact_uri)
