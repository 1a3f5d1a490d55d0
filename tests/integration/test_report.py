"""The training report: beside each registered model in the store, carried by an export, and
served by a real `bentoml serve` at /models/{name}/report."""

from __future__ import annotations

import html
import http.client
import re
import shutil
from pathlib import Path
from urllib.parse import urljoin

import bentoml
import httpx
import pytest

from bentos.models import REPORT_DIR
from bentos.training import report
from tests.support import SERVER_ENV
from tests.support.strategies import FEATURES

LABELS = ["setosa", "versicolor", "virginica"]
RF_PICTURES = {report.CONFUSION, report.ROC, report.PR, report.IMPORTANCES}
PICTURES = {"rf": RF_PICTURES, "tflite": RF_PICTURES | {report.PARITY}}


def _tags(trained) -> dict[str, str]:
    return {"rf": trained.rf_tag, "tflite": trained.tflite_tag}


def _folder(tag: str) -> Path:
    return Path(bentoml.models.get(tag).path) / REPORT_DIR


def _links(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


@pytest.mark.parametrize("name", ["rf", "tflite"])
def test_each_registered_model_has_its_report_beside_it(trained, name):
    tag = _tags(trained)[name]
    folder = _folder(tag)
    assert trained.reports[tag] == str(folder / report.INDEX)
    assert {p.name for p in folder.iterdir()} == PICTURES[name] | {report.INDEX}
    for picture in PICTURES[name]:
        content = (folder / picture).read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert len(content) > 5000, picture
    page = (folder / report.INDEX).read_text()
    assert sorted(_links(page)) == sorted(PICTURES[name])
    for value in (*LABELS, *FEATURES):
        assert f"<th>{value}</th>" in page, value
    meta = bentoml.models.get(tag).info.metadata
    assert tag in page
    assert meta["training_data"]["sha256"] in page
    assert html.escape(meta["training_data"]["source"]) in page
    assert f"<b>{meta['metrics']['accuracy']:.4f}</b>" in page


def test_the_tflite_report_shows_its_parity_against_keras(trained):
    page = (_folder(trained.tflite_tag) / report.INDEX).read_text()
    assert "<h2>TFLite against Keras</h2>" in page
    agreement = trained.parity["argmax_agreement"]
    assert f"<tr><th>argmax_agreement</th><td>{agreement:.4f}</td></tr>" in page
    assert "<tr><th>max_abs_diff</th>" in page
    assert "max |difference|" in page  # the parity picture's caption


def test_the_report_travels_with_an_exported_model(trained, tmp_path):
    from bentoml._internal.models.model import ModelStore

    for tag in _tags(trained).values():
        archive = tmp_path / f"{tag.replace(':', '-')}.bentomodel"
        bentoml.models.export_model(tag, str(archive))
        imported = bentoml.models.import_model(
            str(archive), _model_store=ModelStore(tmp_path / "other-store")
        )
        assert str(imported.tag) == tag
        there, here = Path(imported.path) / REPORT_DIR, _folder(tag)
        assert sorted(p.name for p in there.iterdir()) == sorted(p.name for p in here.iterdir())
        for file in here.iterdir():
            assert (there / file.name).read_bytes() == file.read_bytes(), file.name


@pytest.mark.parametrize("name", ["rf", "tflite"])
def test_the_served_report_s_links_resolve_to_its_pictures(server, trained, name):
    resp = httpx.get(f"{server.url}/models/{name}/report")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in resp.headers["content-security-policy"]  # none allowed
    page = resp.text
    assert _tags(trained)[name] in page
    # As a browser resolves them: against the page's <base>, itself against the page's URL.
    base = re.search(r'<base href="([^"]+)">', page)
    base_url = urljoin(str(resp.url), base.group(1)) if base else str(resp.url)
    folder = _folder(_tags(trained)[name])
    links = _links(page)
    assert sorted(links) == sorted(PICTURES[name])
    for link in links:
        picture = httpx.get(urljoin(base_url, link))
        assert picture.status_code == 200, (link, picture.text)
        assert picture.headers["content-type"] == "image/png"
        assert picture.content == (folder / link).read_bytes()
    # The same page from its folder's own URL, where the links need no <base>.
    own = httpx.get(f"{server.url}/models/{name}/report/")
    assert own.status_code == 200 and '<base href="report/">' not in own.text
    assert _links(own.text) == links
    listed = {m["name"]: m for m in httpx.get(server.url + "/models").json()["models"]}
    assert listed[name]["report"] == f"/models/{name}/report"


@pytest.mark.parametrize("path", ["/models/forest/report", "/models/forest/report/roc.png"])
def test_an_unknown_model_s_report_is_a_404_naming_the_models(server, path):
    resp = httpx.get(server.url + path)
    assert resp.status_code == 404
    assert resp.json()["error"] == "unknown model 'forest'; the models are rf, tflite"


def _raw_get(server, path: str) -> tuple[int, str, bytes]:
    """GET `path` as it is written: no client normalizes its dots or encoded slashes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "127.0.0.1")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


TRAVERSALS = [  # the report is <model folder>/report: one level up is the model's own files
    "/models/rf/report/../model.yaml",
    "/models/rf/report/..%2Fmodel.yaml",
    "/models/rf/report/%2e%2e%2fsaved_model.pkl",
    "/models/rf/report/..%5Cmodel.yaml",
    "/models/rf/report/../../../../../../etc/passwd",
    "/models/rf/report/..",
    "/models/rf/report/.",
    "/models/rf/report/%2Fetc%2Fpasswd",
    "/models/rf/report//etc/passwd",
    "/models/rf/report/index.html%00.png",
    "/models/rf/report%2F..%2Fmodel.yaml",
    "/models/..%2Frf/report",
    "/models/rf%2F..%2Ftflite/report/parity.png",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_name_reaches_outside_the_report_folder(server, trained, path):
    status, content_type, body = _raw_get(server, path)
    assert status in (400, 404), (path, status, body[:300])
    assert content_type.startswith("application/json"), (path, content_type)
    model_yaml = (Path(bentoml.models.get(trained.rf_tag).path) / "model.yaml").read_bytes()
    assert b"bentoml.sklearn" in model_yaml  # what a leak of it would show
    assert b"bentoml.sklearn" not in body and b"root:" not in body and b"\x89PNG" not in body


def test_a_report_file_it_does_not_have_is_a_404_naming_what_was_asked_and_what_it_has(server):
    resp = httpx.get(server.url + "/models/rf/report/parity.png")
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert "has no file 'parity.png'" in error
    for file in sorted(RF_PICTURES | {report.INDEX}):
        assert file in error


def test_report_requests_are_counted_by_route_template(server):
    for path in ("/models/rf/report", "/models/rf/report/roc.png", "/models/rf/report/x.png"):
        httpx.get(server.url + path)
    _raw_get(server, "/models/rf/report/..%2Fmodel.yaml")
    text = httpx.get(server.url + "/metrics").text
    assert 'route="/models/{name}/report"' in text
    assert 'route="/models/{name}/report/{file}"' in text
    assert "roc.png" not in text and "model.yaml" not in text and "x.png" not in text


def test_a_model_registered_before_reports_is_a_404_that_says_how_to_make_one(
    serve, trained, pinned, bentoml_home, tmp_path
):
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models")
    version = trained.rf_tag.split(":")[1]
    shutil.rmtree(home / "models" / "rf-classifier" / version / REPORT_DIR)
    srv = serve({**SERVER_ENV, **pinned, "BENTOML_HOME": str(home)}).wait_ready()
    try:
        for path in ("/models/rf/report", "/models/rf/report/roc.png"):
            resp = httpx.get(srv.url + path)
            assert resp.status_code == 404, resp.text
            error = resp.json()["error"]
            assert f"model 'rf' ({trained.rf_tag}) has no report" in error
            assert "retrain it (`bentos train`, or the retrain job)" in error
        listed = {m["name"]: m for m in httpx.get(srv.url + "/models").json()["models"]}
        assert listed["rf"]["report"] is None
        assert listed["tflite"]["report"] == "/models/tflite/report"
        assert httpx.get(srv.url + "/models/tflite/report").status_code == 200
    finally:
        srv.stop()
