"""Throughput of the face pipeline on a folder of photos. Not a test: numbers for people.

    .venv/bin/python bench/pipeline.py [--folder ../shared/faces/groups] [--workers 2] [--repeat 3]
    .venv/bin/python bench/pipeline.py --bibs [--megapixels 24] [--folder ...]   # the bib reader's cost

For each backend (yunet-sface with both engines; facenet when importable), each device (cpu, and
cuda when present) and 1 and N worker processes, it prints photos/s (decode + detect + embed),
ms per face, and peak memory. Workers fork from a parent that has loaded no model and not touched
CUDA, then each loads its own backend, as Celery workers do.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.image import decode_image  # noqa: E402  (cv2 and Pillow only: safe before fork)

MAX_PIXELS = 60_000_000
DETECT_LONG_SIDE = 1600


def make_backend(spec: str, device: str, cache_dir: Path):  # type: ignore[no-untyped-def]
    """`spec` is a backend name, or "yunet-sface/torch" to force the torch engine on CPU."""
    from models.loader import get_backend

    if spec == "yunet-sface/torch":
        import torch

        from models.yunet_sface import YunetSfaceBackend

        torch.set_num_threads(1)
        backend = YunetSfaceBackend(device=device, engine="torch")
        backend.load()
        return backend
    return get_backend(spec, device=device, cache_dir=cache_dir)


def worker(spec: str, device: str, cache_dir: Path, paths: list[Path], start: mp.Barrier,
           results: mp.Queue) -> None:
    from models.pipeline import detect_faces, embed_faces

    backend = make_backend(spec, device, cache_dir)
    warm = decode_image(paths[0], max_pixels=MAX_PIXELS)
    embed_faces([warm], detect_faces([warm], backend), backend)  # first-call allocations off the clock
    start.wait()
    faces, detect_s, embed_s, t0 = 0, 0.0, 0.0, time.perf_counter()
    for path in paths:
        image = decode_image(path, max_pixels=MAX_PIXELS)
        t1 = time.perf_counter()
        found = detect_faces([image], backend, detect_long_side=DETECT_LONG_SIDE)
        t2 = time.perf_counter()
        faces += len(embed_faces([image], found, backend)[0])
        detect_s, embed_s = detect_s + t2 - t1, embed_s + time.perf_counter() - t2
    wall = time.perf_counter() - t0
    gpu_mb = 0.0
    if "torch" in sys.modules and device.startswith("cuda"):
        gpu_mb = sys.modules["torch"].cuda.max_memory_allocated() / 2**20
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    results.put((len(paths), faces, wall, detect_s, embed_s, rss_mb, gpu_mb))


def run(spec: str, device: str, workers: int, photos: list[Path], cache_dir: Path) -> str:
    ctx = mp.get_context("fork")
    start, results = ctx.Barrier(workers + 1), ctx.Queue()
    shares = [photos[i::workers] for i in range(workers)]
    procs = [ctx.Process(target=worker, args=(spec, device, cache_dir, share, start, results))
             for share in shares]
    for p in procs:
        p.start()
    start.wait()  # every worker has loaded its backend
    t0 = time.perf_counter()
    rows = [results.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    n_photos, n_faces = sum(r[0] for r in rows), sum(r[1] for r in rows)
    detect_ms = 1000 * sum(r[3] for r in rows) / n_photos
    embed_ms = 1000 * sum(r[4] for r in rows) / max(n_faces, 1)
    total_ms = 1000 * sum(r[2] for r in rows) / max(n_faces, 1)
    rss, gpu = max(r[5] for r in rows), max(r[6] for r in rows)
    gpu_txt = f"  peak GPU {gpu:7.0f} MiB" if device.startswith("cuda") else ""
    return (f"{spec:18s} {device:4s} workers={workers}  {n_photos / wall:6.2f} photos/s  "
            f"{total_ms:6.1f} ms/face all-in  detect {detect_ms:6.1f} ms/photo  embed {embed_ms:5.1f} ms/face  "
            f"{n_faces} faces  peak RSS/worker {rss:6.0f} MiB{gpu_txt}")


def cuda_present() -> bool:
    # Asked in a throwaway child so the parent never initialises CUDA before forking workers.
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_cuda_available)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def bib_cost(folder: Path, megapixels: float, repeat: int) -> None:
    """Face-only stage vs face + bib stage, one process, one thread, on the race photos of `folder`
    scaled to `megapixels` (race cameras shoot 24 MP); CPU time as well as wall time, since the
    machine's cores may be shared."""
    import io

    from PIL import Image

    from models import bibs
    from models.bib_reader import get_reader
    from models.loader import get_backend
    from models.pipeline import detect_faces, embed_faces

    backend = get_backend("yunet-sface", device="cpu", cache_dir=REPO / "data" / "models")
    reader = get_reader()
    photos = []
    for path in sorted(folder.glob("race_*.jpg")):
        img = Image.open(path).convert("RGB")
        scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
        buf = io.BytesIO()
        img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC).save(buf, "JPEG", quality=90)
        photos.append(buf.getvalue())
    face = [0.0, 0.0]
    bib = [0.0, 0.0]
    n = 0
    for k in range(repeat + 1):  # the first pass warms up, off the clock
        for data in photos:
            w0, c0 = time.perf_counter(), time.process_time()
            image = decode_image(data, max_pixels=MAX_PIXELS)
            found = detect_faces([image], backend, detect_long_side=DETECT_LONG_SIDE)
            embed_faces([image], found, backend)
            w1, c1 = time.perf_counter(), time.process_time()
            bibs.read_bibs(image, [d.box for d in found[0]], reader)
            w2, c2 = time.perf_counter(), time.process_time()
            if k:
                face[0], face[1] = face[0] + w1 - w0, face[1] + c1 - c0
                bib[0], bib[1] = bib[0] + w2 - w1, bib[1] + c2 - c1
                n += 1
    print(f"{n} photos at {megapixels:g} MP, 1 thread: face stage {1000 * face[0] / n:.0f} ms wall / "
          f"{1000 * face[1] / n:.0f} ms CPU per photo; bib stage {1000 * bib[0] / n:.0f} ms wall / "
          f"{1000 * bib[1] / n:.0f} ms CPU; face+bib = {(face[1] + bib[1]) / face[1]:.2f}x face-only CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "faces" / "groups")
    parser.add_argument("--workers", type=int, default=mp.cpu_count())
    parser.add_argument("--repeat", type=int, default=2, help="passes over the folder")
    parser.add_argument("--backends", default="", help="comma list; default: all available")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "data" / "models")
    parser.add_argument("--bibs", action="store_true", help="measure the bib stage against the face stage")
    parser.add_argument("--megapixels", type=float, default=24.0, help="with --bibs: photo size")
    args = parser.parse_args()
    if args.bibs:
        bib_cost(args.folder, args.megapixels, args.repeat)
        return

    photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) * args.repeat
    specs = ["yunet-sface", "yunet-sface/torch"]
    if importlib.util.find_spec("models.facenet") is not None:
        specs.append("facenet")
    if args.backends:
        specs = [s for s in args.backends.split(",") if s]
    devices = ["cpu"] + (["cuda"] if cuda_present() else [])
    print(f"{len(photos)} photos from {args.folder}, detection at long side {DETECT_LONG_SIDE}")
    for device in devices:
        for spec in specs:
            for workers in sorted({1, args.workers}):
                print(run(spec, device, workers, photos, args.cache_dir), flush=True)


if __name__ == "__main__":
    main()
