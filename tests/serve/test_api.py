"""detflow serve over a real socket: detect equals `detflow predict` on the same images, the
model card, health, readiness and Prometheus metrics; every bad input gets its 4xx JSON
error and the server keeps serving with flat memory."""

import io
import json

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from detflow.deploy.predict import predict_source


def _metrics(server) -> dict:
    """``{(name, labels...): value}`` from /metrics (parsed as Prometheus text)."""
    response = server.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return values


def test_detect_equals_predict_and_metrics_parse(served_model, serve, tmp_path):
    model, folder = served_model
    summary = predict_source(model=model, source=folder, out_dir=tmp_path / "p", progress=False)
    lines = (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()
    expected = {json.loads(line)["source"].rsplit("/", 1)[-1]: json.loads(line) for line in lines}
    assert summary["images"] == 4
    server = serve(["--model", str(model), "--request-log", str(tmp_path / "req.jsonl")])
    total = 0
    for name, record in sorted(expected.items()):
        data = (folder / name).read_bytes()
        raw = server.client.post("/v1/detect", content=data, headers={"content-type": "image/png"})
        form = server.client.post("/v1/detect", files={"image": (name, data, "image/png")})
        for response in (raw, form):
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["detections"] == record["detections"], name
            assert (body["width"], body["height"]) == (record["width"], record["height"])
            assert body["model"].startswith("deploy@") and body["latency_ms"] > 0
        total += 2 * len(record["detections"])
    assert total > 0  # the comparison is not vacuous
    data = (folder / "img0.png").read_bytes()
    top = server.client.post(
        "/v1/detect?score_threshold=0.3&max_detections=2&classes=dog",
        content=data,
        headers={"content-type": "application/octet-stream"},
    ).json()["detections"]
    full = [d for d in expected["img0.png"]["detections"] if d["score"] >= 0.3]
    assert top == [d for d in full if d["class"] == "dog"][:2] and top
    drawn = server.client.post(
        "/v1/detect?annotated=true", content=data, headers={"content-type": "image/png"}
    )
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(drawn.content)).size == (128, 96)
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json()["models"] == ["deploy"]
    card = server.client.get("/v1/model").json()["models"]["deploy"]
    assert card["class_names"] == ["cat", "dog"] and card["model_id"].startswith("deploy@")
    metrics = _metrics(server)
    assert metrics[("detflow_requests_total", ("model", "deploy"), ("status", "200"))] == 10
    assert metrics[("detflow_batch_size_count", ("model", "deploy"))] >= 1
    assert metrics[("detflow_detections_per_image_count", ("model", "deploy"))] == 10
    assert metrics[("detflow_request_latency_seconds_count", ("model", "deploy"))] == 10
    assert metrics[("detflow_detection_score_count", ("model", "deploy"))] > 0
    by_class = sum(v for k, v in metrics.items() if k[0] == "detflow_detections_by_class_total")
    assert by_class == metrics[("detflow_detection_score_count", ("model", "deploy"))]
    log = [json.loads(line) for line in (tmp_path / "req.jsonl").read_text().splitlines()]
    assert len(log) == 10 and {r["model"] for r in log} == {"deploy"}
    assert {"ts", "latency_ms", "detections", "mean_score", "request_id"} <= set(log[0])


def _png(width, height, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_bad_input_gets_its_4xx_and_the_server_lives(served_model, serve):
    model, folder = served_model
    server = serve(["--model", str(model), "--max-upload-mb", "1"])
    bomb = _png(15_000, 15_000, mode="1")  # 225 Mpx in a few kB
    assert len(bomb) < 100_000
    png = {"content-type": "image/png"}
    cases = [
        ("not_an_image", 400, {"content": b"this is not an image", "headers": png}),
        ("empty_body", 400, {"content": b"", "headers": png}),
        ("too_many_pixels", 413, {"content": bomb, "headers": png}),
        ("upload_too_large", 413, {"content": b"\0" * 2_000_000, "headers": png}),
        (
            "upload_too_large",  # no Content-Length: counted while reading
            413,
            {"content": [b"\0" * 600_000] * 3, "headers": png},
        ),
        (
            "unsupported_media_type",
            415,
            {"content": _png(8, 8), "headers": {"content-type": "text/plain"}},
        ),
        ("unsupported_media_type", 415, {"data": {"a": "b"}}),
        ("no_image", 400, {"files": {"other": ("x", b"1")}, "data": {"image": "text"}}),
        (
            "no_image",  # a broken body parses as an empty form
            400,
            {
                "content": b"--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
        ),
        (
            "bad_query",
            422,
            {"params": {"score_threshold": "abc"}, "content": _png(8, 8), "headers": png},
        ),
        (
            "bad_query",
            422,
            {"params": {"score_threshold": "2"}, "content": _png(8, 8), "headers": png},
        ),
        (
            "bad_query",
            422,
            {"params": {"max_detections": "0"}, "content": _png(8, 8), "headers": png},
        ),
        ("bad_query", 422, {"params": {"classes": "zebra"}, "content": _png(8, 8), "headers": png}),
        (
            "bad_query",
            422,
            {"params": {"annotated": "perhaps"}, "content": _png(8, 8), "headers": png},
        ),
    ]
    good = (folder / "img1.png").read_bytes()
    expected = server.client.post("/v1/detect", content=good, headers=png).json()["detections"]
    rss = []
    for _ in range(4):
        for kind, status, request in cases:
            response = server.client.post("/v1/detect", **request)
            assert response.status_code == status, (kind, response.text)
            body = response.json()
            assert body["error"] == kind and body["detail"], body
        assert server.client.get("/readyz").status_code == 200
        again = server.client.post("/v1/detect", content=good, headers=png).json()
        assert again["detections"] == expected
        rss.append(server.rss_mb())
    assert rss[-1] - rss[0] < 50, rss  # flat memory: no growth per bad request
    errors = _metrics(server)
    assert errors[("detflow_errors_total", ("kind", "too_many_pixels"))] == 4
    assert errors[("detflow_requests_total", ("model", "none"), ("status", "415"))] == 8


def test_a_server_bug_answers_500_json_and_the_worker_lives(served_model, monkeypatch, tmp_path):
    """In process (TestClient): a failure after inference is the server's, not the client's."""
    from fastapi.testclient import TestClient

    from detflow.serve import app as serve_app
    from detflow.serve import detect_request
    from detflow.serve.options import load_options

    model, folder = served_model
    options = load_options(models=[{"path": str(model)}], request_log=str(tmp_path / "r.jsonl"))
    data = (folder / "img0.png").read_bytes()
    with TestClient(serve_app.create_app(options), raise_server_exceptions=False) as client:
        calls = []

        def broken(*args):
            calls.append(args)
            raise RuntimeError("boom")

        monkeypatch.setattr(detect_request, "detection_list", broken)
        response = client.post("/v1/detect", content=data, headers={"content-type": "image/png"})
        assert response.status_code == 500 and response.json()["error"] == "internal"
        monkeypatch.undo()
        again = client.post("/v1/detect", content=data, headers={"content-type": "image/png"})
        assert again.status_code == 200 and calls


def test_concurrent_requests_run_as_one_batch_with_the_single_image_answers(served_model, serve):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    model, folder = served_model
    single = serve(["--model", str(model), "--max-batch", "1"])
    names = sorted(p.name for p in folder.glob("*.png")) * 2  # 8 images of 4 sizes
    data = {name: (folder / name).read_bytes() for name in names}
    png = {"content-type": "image/png"}
    expected = {
        n: single.client.post("/v1/detect", content=data[n], headers=png).json() for n in data
    }
    server = serve(["--model", str(model), "--max-batch", "8", "--max-wait-ms", "300"])

    def post(name):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return name, client.post("/v1/detect", content=data[name], headers=png).json()

    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(post, names))
    for name, body in answers:
        assert body["detections"] == expected[name]["detections"] and body["detections"], name
    sizes = {k: v for k, v in _metrics(server).items() if k[0].startswith("detflow_batch_size")}
    runs = sizes[("detflow_batch_size_count", ("model", "deploy"))]
    images = sizes[("detflow_batch_size_sum", ("model", "deploy"))]
    assert images == len(names) and runs < len(names)  # some images shared one run


def test_two_sessions_serve_concurrent_requests_with_the_one_session_answers(served_model, serve):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    model, folder = served_model
    names = sorted(p.name for p in folder.glob("*.png")) * 3  # 12 images of 4 sizes
    data = {name: (folder / name).read_bytes() for name in names}
    png = {"content-type": "image/png"}
    one = serve(["--model", str(model), "--max-batch", "1"])
    expected = {n: one.client.post("/v1/detect", content=data[n], headers=png).json() for n in data}
    server = serve(["--model", str(model), "--max-batch", "1", "--sessions", "2"])

    def post(name):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return name, client.post("/v1/detect", content=data[name], headers=png)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, names))
    for name, response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["detections"] == expected[name]["detections"], name
    runs = _metrics(server)[("detflow_batch_size_count", ("model", "deploy"))]
    assert runs == len(names)  # max_batch 1: one run per image, over the two sessions


def test_an_openvino_ir_is_served_over_http_like_predict_runs_it(served_model, serve, tmp_path):
    """optimize's default deploy format, an OpenVINO IR (``model.xml`` + ``.bin``), served
    from its folder by a real server (no torch imported), answers what `detflow predict`
    finds with the same IR."""
    from detflow.deploy.openvino_build import build_openvino

    model, folder = served_model
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    build_openvino(model, deploy / "model.xml", precision="f32")
    predict_source(model=deploy, source=folder, out_dir=tmp_path / "p", progress=False)
    lines = (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()
    expected = {json.loads(line)["source"].rsplit("/", 1)[-1]: json.loads(line) for line in lines}
    server = serve(["--model", str(deploy)])
    card = server.client.get("/v1/model").json()["models"]["deploy"]
    assert card["path"].endswith("model.xml") and card["class_names"] == ["cat", "dog"]
    total = 0
    for name, record in sorted(expected.items()):
        response = server.client.post(
            "/v1/detect",
            content=(folder / name).read_bytes(),
            headers={"content-type": "image/png"},
        )
        assert response.status_code == 200, response.text
        got, want = response.json()["detections"], record["detections"]
        assert [d["class"] for d in got] == [d["class"] for d in want], name
        for a, b in zip(got, want, strict=True):
            assert abs(a["score"] - b["score"]) < 1e-4, name
            assert max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)) < 0.05, name
        total += len(got)
    assert total > 0  # the comparison is not vacuous
    drawn = server.client.post(
        "/v1/detect?annotated=true",
        content=(folder / "img0.png").read_bytes(),
        headers={"content-type": "image/png"},
    )
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
