# detflow serve: the deploy model behind the HTTP API, CPU only, no torch (docs/deployment.md#serve).
#   docker build -t detflow-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/models/deploy:/models/deploy:ro" detflow-serve
# The model is mounted (or: COPY models/deploy /models/deploy, after `dvc pull`); a new
# model.onnx in the mounted folder is picked up without a restart (hot reload).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# the base install + the serve extra (OpenVINO included), at the versions pinned in constraints.txt:
# ONNX Runtime, OpenVINO (when optimize deployed an OpenVINO IR, model.xml), NumPy, Pillow,
# FastAPI/uvicorn, prometheus-client; no torch, OpenCV, DVC or Hydra
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install -c constraints.txt ".[serve]" && rm -rf /app/src \
    && useradd --create-home --uid 10001 detflow \
    && mkdir -p /models/deploy /logs && chown detflow /logs

USER detflow
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
ENTRYPOINT ["detflow", "serve", "--host", "0.0.0.0", "--port", "8000", "--model", "/models/deploy", "--request-log", "/logs/requests.jsonl"]
