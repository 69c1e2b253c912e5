"""serve: the deploy model behind an HTTP API (``detflow serve``), on ONNX Runtime alone.

options (the validated ``serve.*``), batching (one worker per model: a bounded queue, requests
grouped up to ``max_batch`` or ``max_wait_ms``), routing (A/B shares sticky per client id,
shadow models), monitoring (Prometheus metrics, the JSON Lines request log), reload (a new
``models/deploy/model.onnx`` swapped in between batches), app (the FastAPI routes) and report
(``detflow serve-report``). Imports no torch and never imports train.
"""
