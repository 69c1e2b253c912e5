"""detflow serve under traffic, over real sockets: the bounded queue answers 503 with
Retry-After, A/B shares hold within 5 points over 2,000 requests and stick per client id,
a shadow never changes a response, and a hot reload under load drops nothing."""

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import onnx

from detflow.serve.options import ModelSpec
from detflow.serve.report import summarize
from detflow.serve.routing import Router

PNG = {"content-type": "image/png"}


def test_router_shares_are_sticky_and_proportional():
    router = Router(
        [ModelSpec("a", "a", 0.7), ModelSpec("b", "b", 0.3), ModelSpec("s", "s", 1, True)]
    )
    picks = [router.choose(f"client-{i}") for i in range(20_000)]
    assert abs(picks.count("a") / len(picks) - 0.7) < 0.02
    assert picks == [router.choose(f"client-{i}") for i in range(20_000)]  # sticky
    assert router.shadows == ["s"] and set(picks) == {"a", "b"}


def test_full_queue_answers_503_with_retry_after(served_model, serve):
    model, folder = served_model
    server = serve(["--model", str(model), "--max-batch", "1", "--queue-size", "1"])
    data = (folder / "img3.png").read_bytes()

    def post(_):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post("/v1/detect", content=data, headers=PNG)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(48)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) > 0
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"] == "queue_full"
    assert server.client.get("/readyz").status_code == 200


def test_ab_shares_sticky_clients_and_a_shadow_that_changes_nothing(served_model, serve, tmp_path):
    model, folder = served_model
    for name in ("a", "b", "s"):
        shutil.copy(model, tmp_path / f"{name}.onnx")
    config = tmp_path / "serve.yaml"
    config.write_text(
        "serve:\n"
        f"  request_log: {tmp_path / 'log.jsonl'}\n"
        "  models:\n"
        f"    - {{name: a, path: {tmp_path / 'a.onnx'}, share: 0.7}}\n"
        f"    - {{name: b, path: {tmp_path / 'b.onnx'}, share: 0.3}}\n"
        f"    - {{name: s, path: {tmp_path / 's.onnx'}, shadow: true}}\n"
    )
    data = (folder / "img2.png").read_bytes()  # 64x64: the fastest of the four
    requests = 800  # client ids c0..c799: their hashes send 70.5 % to model a
    plain = serve(["--model", str(model), "--request-log", str(tmp_path / "plain.jsonl")])
    expected = plain.client.post("/v1/detect", content=data, headers=PNG).json()["detections"]
    server = serve(["--config", str(config)])

    def post(index):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            out = []
            for i in range(index, requests, 4):
                r = client.post("/v1/detect", content=data, headers={**PNG, "X-Client-Id": f"c{i}"})
                assert r.status_code == 200, r.text
                body = r.json()
                out.append((i, body["model_name"], body["detections"] == expected))
            return out

    with ThreadPoolExecutor(4) as pool:
        results = [row for part in pool.map(post, range(4)) for row in part]
    assert len(results) == requests
    assert all(same for _, _, same in results)  # the shadow changes nothing
    share_a = sum(name == "a" for _, name, _ in results) / len(results)
    assert abs(share_a - 0.7) <= 0.05, share_a
    assert {name for _, name, _ in results} == {"a", "b"}  # the shadow never answers
    first = {i: name for i, name, _ in results}
    for i in range(0, requests, 37):  # the same client id lands on the same model again
        r = server.client.post("/v1/detect", content=data, headers={**PNG, "X-Client-Id": f"c{i}"})
        assert r.json()["model_name"] == first[i]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the shadow's results reach the log after the answers
        log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
        shadow = [r for r in log if r["shadow"]]
        if len(shadow) + int(_metric(server, "detflow_shadow_dropped_total")) >= requests:
            break
        time.sleep(0.5)
    assert shadow and {r["model"] for r in shadow} == {"s"}
    primary = {r["request_id"]: r for r in log if not r["shadow"]}
    assert all(r["request_id"] in primary for r in shadow)
    assert all(r["detections"] == primary[r["request_id"]]["detections"] for r in shadow)
    rows = {row["model"]: row for row in summarize(log)}  # detflow serve-report's table
    assert rows["s"]["shadow"] and rows["s"]["agreement"] == 1.0  # the same model, mirrored
    assert rows["a"]["requests"] + rows["b"]["requests"] == len(primary)


def _metric(server, name: str) -> float:
    total = 0.0
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_hot_reload_under_load_drops_nothing(served_model, serve, tmp_path):
    model, folder = served_model
    live = tmp_path / "deploy"
    live.mkdir()
    shutil.copy(model, live / "model.onnx")
    newer = onnx.load(model)  # the same graph with one more metadata entry: a new file hash
    onnx.helper.set_model_props(
        newer,
        {**{p.key: p.value for p in newer.metadata_props}, "detflow_note": "retrained"},
    )
    onnx.save(newer, tmp_path / "newer.onnx")
    server = serve(["--model", str(live), "--reload-interval-s", "0.2"])
    old_id = server.client.get("/v1/model").json()["models"]["deploy"]["model_id"]
    data = (folder / "img2.png").read_bytes()
    stop, seen, failures = threading.Event(), [], []

    def load():
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                r = client.post("/v1/detect", content=data, headers=PNG)
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    seen.append(r.json()["model"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    shutil.copy(tmp_path / "newer.onnx", live / "model.onnx.tmp")
    os.replace(live / "model.onnx.tmp", live / "model.onnx")  # as dvc checkout does
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not seen or seen[-1] == old_id):
        time.sleep(0.2)
    time.sleep(1.0)
    (live / "model.onnx.tmp").write_bytes(b"a half-written file")  # a bad file keeps the model
    os.replace(live / "model.onnx.tmp", live / "model.onnx")
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    new_id = server.client.get("/v1/model").json()["models"]["deploy"]["model_id"]
    assert failures == [] and len(seen) > 20
    assert new_id != old_id and set(seen) == {old_id, new_id}
    assert seen.index(new_id) > 0 and old_id not in seen[seen.index(new_id) + 4 :]
    assert _metric(server, 'detflow_model_reloads_total{model="deploy",result="ok"}') == 1
    assert _metric(server, 'detflow_model_reloads_total{model="deploy",result="failed"}') == 1
    assert server.client.get("/readyz").status_code == 200
