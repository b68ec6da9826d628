"""Throughput of the face pipeline on a folder of photos. Not a test: numbers for people.

    .venv/bin/python bench/pipeline.py [--folder ../shared/faces/groups] [--workers 2] [--repeat 3]
    .venv/bin/python bench/pipeline.py --race24 12 --steps     # each lever on 24 MP race photos
    .venv/bin/python bench/pipeline.py --bibs [--megapixels 24] [--folder ...]   # the bib reader's cost

`--race24 N` builds N 6000x4000 photos with about 18 faces each (bench/race_photos.py) in a temp
folder and uses them instead of `--folder`. `--steps` times every stage of the old path (full
decode + resize) and of the new one (one full decode feeding every stage, models/pipeline.py: analyse_files) on one core,
in CPU time (process_time, threads pinned to 1) and wall time, and checks that the new path finds
the same faces with the same embeddings.

For each backend (yunet-sface with its default engine, then opencv and torch; facenet when importable), each device (cpu, and
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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.race_photos import build_race_photos  # noqa: E402
from models.image import decode_image  # noqa: E402  (cv2 and Pillow only: safe before fork)

MAX_PIXELS = 60_000_000
DETECT_LONG_SIDE = 1600
SAME_CROPS = "embed (OpenCV, same crops: not in total)"
BIBS = "bibs (on the crops' decode: not in total)"


def make_backend(spec: str, device: str, cache_dir: Path):  # type: ignore[no-untyped-def]
    """`spec` is a backend name, or "yunet-sface/ENGINE" (torch, opencv, openvino) to force an engine."""
    from models.loader import get_backend

    if spec.startswith("yunet-sface/"):
        engine = spec.split("/", 1)[1]
        if engine == "torch":
            import torch

            torch.set_num_threads(1)
        return get_backend("yunet-sface", device=device, cache_dir=cache_dir, engine=engine)
    return get_backend(spec, device=device, cache_dir=cache_dir)


def worker(spec: str, device: str, cache_dir: Path, paths: list[Path], start: mp.Barrier,
           results: mp.Queue) -> None:
    """The worker's own path (analyse_files, previews from the detection image), one photo at a time."""
    from models.image import render_jpeg
    from models.pipeline import analyse_files

    backend = make_backend(spec, device, cache_dir)
    analyse_files(paths[:1], backend, max_pixels=MAX_PIXELS)  # first-call allocations off the clock
    start.wait()
    faces, t0 = 0, time.perf_counter()
    for path in paths:
        [photo] = analyse_files([path], backend, max_pixels=MAX_PIXELS, detect_long_side=DETECT_LONG_SIDE)
        render_jpeg(photo.preview, 1600)
        render_jpeg(photo.preview, 400)
        faces += len(photo.faces)
    wall = time.perf_counter() - t0
    gpu_mb = 0.0
    if "torch" in sys.modules and device.startswith("cuda"):
        gpu_mb = sys.modules["torch"].cuda.max_memory_allocated() / 2**20
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    results.put((len(paths), faces, wall, rss_mb, gpu_mb))


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
    total_ms = 1000 * sum(r[2] for r in rows) / max(n_faces, 1)
    rss, gpu = max(r[3] for r in rows), max(r[4] for r in rows)
    gpu_txt = f"  peak GPU {gpu:7.0f} MiB" if device.startswith("cuda") else ""
    return (f"{spec:18s} {device:4s} workers={workers}  {n_photos / wall:6.2f} photos/s (wall, with previews)  "
            f"{total_ms:6.1f} ms/face all-in  {n_faces} faces  peak RSS/worker {rss:6.0f} MiB{gpu_txt}")


class Clock:
    """CPU (process_time) and wall seconds per named step."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0
        return out


def steps(paths: list[Path]) -> None:
    """Each stage of the old and the new path on one core; then faces and embeddings compared."""
    import cv2
    from PIL import Image

    from models.image import detection_image, render_jpeg, to_array
    from models.pipeline import crop_by_region, detect_faces, detect_shrunk
    from models.yunet_sface import YunetSfaceBackend

    from models import bibs
    from models.bib_reader import get_reader

    reader = get_reader()
    cv2.setNumThreads(1)
    opencv = YunetSfaceBackend(engine="opencv")  # the path before issue 11: OpenCV DNN, int8 graphs
    default = YunetSfaceBackend()  # what workers run now: openvino on CPU (models/yunet_openvino.py)
    opencv.load()
    default.load()
    precision = default._embedder.precision
    warm = decode_image(paths[0], max_pixels=MAX_PIXELS)
    for backend in (opencv, default):
        # steady state, off the clock: a worker that has run a while has compiled YuNet for its
        # photos' size (after COMPILE_AFTER of them) and run SFace at every batch size once
        for _ in range(3):
            crops = backend.crop_faces(to_array(warm), detect_faces([warm], backend)[0])
        for n in range(1, 33):
            backend.embed((crops * n)[:n])
    # and the bib detector for the shapes that recur (torso regions, the whole-photo pass)
    warm_faces = [d.box for d in detect_faces([warm], default)[0]]
    warm_overview = Image.fromarray(detection_image(warm, DETECT_LONG_SIDE)[0])
    for _ in range(3):
        bibs.read_bibs(warm, warm_faces, reader, overview=warm_overview)
    old, new = Clock(), Clock()
    old_faces, new_faces, old_vecs, new_vecs = [], [], [], []
    for path in paths:
        # old: full decode, Pillow resize for detection, crops from the full image, OpenCV engine
        image = old.run("decode (full)", decode_image, path, max_pixels=MAX_PIXELS)
        found = old.run("detect (incl. resize)", old_detect, image, opencv)
        crops = old.run("crop (full image)", lambda: opencv.crop_faces(to_array(image), found))
        old_vecs.append(old.run("embed (OpenCV int8 SFace)", opencv.embed, crops))
        old.run("previews (from full)", lambda: (render_jpeg(image, 1600), render_jpeg(image, 400)))
        old_faces.append(found)
        del image
        # new: one full decode feeds every stage (models/pipeline.py: analyse_files)
        image = new.run("decode (full)", decode_image, path, max_pixels=MAX_PIXELS)
        shrunk = new.run("shrink to 1600 px (block reduce + bilinear)", detection_image, image, DETECT_LONG_SIDE)
        found = new.run("detect (openvino fp32)", detect_shrunk, [image.size], [shrunk], default, min_face_px=24)[0]
        crops = new.run("crop (face regions)", crop_by_region, image, found, default)
        preview = Image.fromarray(shrunk[0])  # the detector's image is the preview's size
        new.run(BIBS, bibs.read_bibs, image, [d.box for d in found], reader, overview=preview)
        del image
        new_vecs.append(new.run(f"embed (openvino {precision} SFace)", default.embed, crops))
        new.run(SAME_CROPS, opencv.embed, crops)
        new.run("previews (from the 1600 px image)", lambda: (render_jpeg(preview, 1600), render_jpeg(preview, 400)))
        new_faces.append(found)
    n = len(paths)
    n_old, n_new = sum(map(len, old_faces)), sum(map(len, new_faces))
    print(f"{n} photos, {n_old} faces old path ({n_old / n:.1f}/photo), {n_new} new path")
    for label, clock, skip in (("old", old, set()), ("new", new, {SAME_CROPS, BIBS})):
        print(f"  {label} path, ms per photo     cpu    wall")
        for name in clock.cpu:
            print(f"    {name:32s} {1000 * clock.cpu[name] / n:6.1f}  {1000 * clock.wall[name] / n:6.1f}")
        cpu = sum(v for k, v in clock.cpu.items() if k not in skip)
        wall = sum(v for k, v in clock.wall.items() if k not in skip)
        print(f"    {'total':32s} {1000 * cpu / n:6.1f}  {1000 * wall / n:6.1f}   "
              f"=> {n / cpu:.2f} photos/s per core (CPU time), {n / wall:.2f} wall")
    per_face = {k: 1000 * v / max(n_new, 1) for k, v in new.cpu.items() if k.startswith("embed")}
    print("  embedding ms/face (cpu): " + ", ".join(f"{k} {v:.1f}" for k, v in per_face.items()))
    _compare(old_faces, new_faces, old_vecs, new_vecs)


def old_detect(image, backend):  # type: ignore[no-untyped-def]
    """Detection as before issue 11: a Pillow resize of the whole photo to the detection size."""
    from models.image import downscale, to_array
    from models.pipeline import detect_shrunk

    small, factor = downscale(image, DETECT_LONG_SIDE)
    return detect_shrunk([image.size], [(to_array(small), factor)], backend, min_face_px=24)[0]


def _compare(old_faces, new_faces, old_vecs, new_vecs) -> None:  # type: ignore[no-untyped-def]
    """Faces paired by best IoU; embedding cosine between the two paths on paired faces."""
    import numpy as np

    from tests.models.helpers import iou

    ious, cosines, sizes, lost, extra = [], [], [], 0, 0
    for of, nf, ov, nv in zip(old_faces, new_faces, old_vecs, new_vecs):
        used = set()
        for i, o in enumerate(of):
            best = max(range(len(nf)), key=lambda j: iou(o.box, nf[j].box), default=None)
            if best is None or iou(o.box, nf[best].box) < 0.5:
                lost += 1
                continue
            used.add(best)
            ious.append(iou(o.box, nf[best].box))
            cosines.append(float(ov[i] @ nv[best]))
            sizes.append(min(o.width, o.height))
        extra += len(nf) - len(used)
    c = np.array(cosines)
    print(f"  faces: {lost} lost, {extra} new; box IoU min {min(ious):.3f}; embedding cosine old vs new "
          f"min {c.min():.4f}, mean {c.mean():.4f}, share >= 0.95: {np.mean(c >= 0.95):.3f}")
    size = np.array(sizes)
    for lo, hi in ((0, 48), (48, 96), (96, 192), (192, 10**6)):
        pick = (size >= lo) & (size < hi)
        if pick.any():
            print(f"    faces {lo}-{hi} px: {pick.sum():3d}, cosine min {c[pick].min():.4f} mean {c[pick].mean():.4f}")


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
    parser.add_argument("--race24", type=int, default=0, help="build this many 24 MP race photos and use them")
    parser.add_argument("--steps", action="store_true", help="time each stage, old path vs new, one core")
    parser.add_argument("--bibs", action="store_true", help="measure the bib stage against the face stage")
    parser.add_argument("--megapixels", type=float, default=24.0, help="with --bibs: photo size")
    args = parser.parse_args()
    if args.bibs:
        bib_cost(args.folder, args.megapixels, args.repeat)
        return

    if args.race24:
        folder = Path(tempfile.gettempdir()) / "finishline-race24"
        photos = build_race_photos(REPO.parent / "shared" / "faces" / "groups", folder, args.race24) * args.repeat
        args.folder = folder
    else:
        photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) * args.repeat
    if args.steps:
        steps(photos)
        return
    specs = ["yunet-sface", "yunet-sface/opencv", "yunet-sface/torch"]
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
