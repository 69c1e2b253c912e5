"""detflow serve-report: request logs → a side-by-side table with agreement per shadow."""

import json

import pytest

from detflow.cli import main
from detflow.serve.report import markdown, read_logs, summarize


def _log(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")


def test_report_summarizes_models_and_shadow_agreement(tmp_path, capsys):
    records = []
    for i in range(10):
        model = "a" if i % 2 else "b"
        classes = ["dog"] * (i % 3)
        common = {"request_id": f"r{i}", "detections": len(classes), "classes": classes}
        records.append(
            {
                **common,
                "model": model,
                "shadow": False,
                "latency_ms": 10.0 + i,
                "mean_score": 0.5 if classes else None,
                "model_id": f"{model}@1",
            }
        )
        shadow_classes = classes if i < 8 else ["person"]
        records.append(
            {
                "request_id": f"r{i}",
                "model": "s",
                "shadow": True,
                "latency_ms": 20.0,
                "detections": len(shadow_classes),
                "classes": shadow_classes,
                "mean_score": 0.4,
                "model_id": "s@2",
            }
        )
    _log(tmp_path / "requests.jsonl", records[:12])
    _log(tmp_path / "requests.jsonl.1", records[12:])
    rows = {r["model"]: r for r in summarize(read_logs(sorted(tmp_path.iterdir())))}
    assert rows["a"]["requests"] == rows["b"]["requests"] == 5 and rows["s"]["requests"] == 10
    assert rows["s"]["agreement"] == pytest.approx(0.8) and rows["s"]["compared"] == 10
    assert rows["a"]["agreement"] is None and not rows["a"]["shadow"]
    assert rows["a"]["latency_p50_ms"] == pytest.approx(15.0)
    table = markdown(list(rows.values()))
    assert "| s | shadow | 10 |" in table and "80.0% of 10" in table
    assert main(["serve-report", *map(str, sorted(tmp_path.iterdir()))]) == 0
    assert "| a | answers | 5 |" in capsys.readouterr().out
    assert main(["serve-report", str(tmp_path / "missing.jsonl")]) == 2


def test_serve_config_errors_fail_in_one_line_before_listening(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--model", str(tmp_path / "missing.onnx"), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model not found" in err
    config = tmp_path / "serve.yaml"
    config.write_text("serve:\n  max_batch: 0\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "serve.max_batch=0 must be an integer > 0" in capsys.readouterr().err
    config.write_text("serve:\n  models: [{path: a.onnx, shadow: true}]\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "at least one model must not be a shadow" in capsys.readouterr().err
    config.write_text("serve:\n  models: [{path: a.onnx, weight: 2}]\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "allowed keys: name, path, share, shadow" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()  # nothing written when nothing was served
