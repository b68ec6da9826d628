"""Concurrent uploads against a real `finishline api` process (a benchmark, not a test).

    .venv/bin/python bench/uploads.py [--concurrent 100] [--rounds 3] [--database-url postgresql+psycopg://...]

Starts the API on a loopback port with a fresh data dir (SQLite unless --database-url), then sends
`--concurrent` uploads of one small distinct JPEG at once, `--rounds` times, and prints per round:
how many answered what status, the latency p50/p95/max, and uploads per second. The embedded
broker takes the tasks; no worker runs, so only the request path is measured.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def small_jpeg(n: int) -> bytes:
    image = Image.new("RGB", (64, 48), (n % 256, (n * 37) % 256, (n * 91) % 256))
    image.putpixel((n % 64, (n // 64) % 48), (255 - n % 256, (n // 256) % 256, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def run(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *cmd], env=env, cwd=REPO, check=True,
                          capture_output=True, text=True, **kw)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="finishline-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINISHLINE_", "DATABASE_URL", "REDIS_URL"))}
    env |= {"FINISHLINE_DATA_DIR": str(data_dir), "FINISHLINE_SECRET_KEY": "bench-secret-" + "x" * 20,
            "PYTHONPATH": str(REPO)}
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    key = run(["create-key", "bench"], env).stdout.strip().splitlines()[-1]
    api = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(args.port)], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        event = httpx.post(f"{base}/api/v1/events", json={"name": "Bench"}, headers=headers).json()
        print(f"{args.concurrent} concurrent uploads, {'PostgreSQL' if args.database_url else 'SQLite'}, "
              f"{os.cpu_count()} CPUs")
        for round_no in range(args.rounds):
            barrier = threading.Barrier(args.concurrent)

            def upload(n: int) -> tuple[int, float]:
                n += round_no * args.concurrent
                with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
                    barrier.wait()
                    start = time.perf_counter()
                    response = client.post(f"/api/v1/events/{event['id']}/photos",
                                           files=[("files", (f"{n}.jpg", small_jpeg(n), "image/jpeg"))])
                    return response.status_code, time.perf_counter() - start

            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                results = list(pool.map(upload, range(args.concurrent)))
            wall = time.perf_counter() - started
            latencies = sorted(t for _, t in results)
            statuses = dict(Counter(status for status, _ in results))
            print(f"round {round_no + 1}: statuses {statuses}; latency p50 {statistics.median(latencies):.2f} s, "
                  f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.2f} s, max {latencies[-1]:.2f} s; "
                  f"{args.concurrent / wall:.0f} uploads/s")
    finally:
        api.terminate()
        api.wait(timeout=30)


if __name__ == "__main__":
    main()
