"""Accuracy of the bib reader and of bib search. Not a test: numbers for people.

    .venv/bin/python bench/bibs.py [--scenes 3] [--seed 1] [--save DIR]

Photos: the 5 real race photos of ../shared/faces with the bibs labelled by eye
(tests/bib_images.RACE_LABELS), and rendered scenes: real group photos with bib-like cards pasted
on the torsos of their faces (tilt, perspective, blur, a small year line on each card) plus one
card where no face is, `--scenes` per base photo. Each photo goes through the worker's stages
(YuNet faces at 1600 px, then models.bibs.read_bibs).

Prints, per set: precision and recall of reads (a read is right when its number is on that
photo), and of bib search over a start list holding every labelled number plus as many numbers
nobody wears (a search is right when it returns exactly the photos with that number), the count
of numbers nobody wears that search returned a photo for, and ms per photo (wall and CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.bib_reader import get_reader  # noqa: E402
from models.bibs import read_bibs  # noqa: E402
from models.image import decode_image, detection_image  # noqa: E402
from models.loader import get_backend  # noqa: E402
from models.pipeline import detect_faces, detect_shrunk  # noqa: E402
from tests.bib_images import RACE_LABELS, SCENE_BASES, bib_scene, random_number  # noqa: E402

FACES = REPO.parent / "shared" / "faces"


def evaluate(name: str, photos: list[tuple[str, object, set[str]]], backend, reader, rng) -> None:  # type: ignore[no-untyped-def]
    tp = fp = fn = 0
    found: dict[str, set[str]] = {}
    labelled: dict[str, set[str]] = {}
    wall = cpu = 0.0
    misses, wrong = [], []
    for photo_id, image, labels in photos:
        shrunk = detection_image(image, 1600)  # the stored faces and the overview, as the worker has them
        faces = detect_shrunk([image.size], [shrunk], backend, min_face_px=24)[0]
        overview = Image.fromarray(shrunk[0])
        t0, c0 = time.perf_counter(), time.process_time()
        reads = {r.number for r in read_bibs(image, [f.box for f in faces], reader, overview=overview)}
        wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
        tp += len(reads & labels)
        fp += len(reads - labels)
        fn += len(labels - reads)
        misses += [f"{photo_id}:{n}" for n in labels - reads]
        wrong += [f"{photo_id}:{n}" for n in reads - labels]
        for n in reads:
            found.setdefault(n, set()).add(photo_id)
        for n in labels:
            labelled.setdefault(n, set()).add(photo_id)
    worn = set(labelled)
    nobody = set()
    while len(nobody) < len(worn):
        n = random_number(rng)
        if n not in worn:
            nobody.add(n)
    s_tp = sum(len(found.get(n, set()) & labelled[n]) for n in worn)
    s_fp = sum(len(found.get(n, set()) - labelled.get(n, set())) for n in worn | nobody)
    s_fn = sum(len(labelled[n] - found.get(n, set())) for n in worn)
    ghost = sum(1 for n in nobody if found.get(n))
    n = len(photos)
    print(f"{name}: {n} photos, {sum(len(p[2]) for p in photos)} labelled bibs")
    print(f"  reads   precision {tp / max(tp + fp, 1):.3f}  recall {tp / max(tp + fn, 1):.3f}  ({tp} right, {fp} wrong, {fn} missed)")
    print(f"  search  precision {s_tp / max(s_tp + s_fp, 1):.3f}  recall {s_tp / max(s_tp + s_fn, 1):.3f}  "
          f"numbers nobody wears returned: {ghost} of {len(nobody)}")
    print(f"  reader  {1000 * wall / n:.0f} ms/photo wall, {1000 * cpu / n:.0f} ms/photo CPU")
    if misses:
        print(f"  missed: {' '.join(misses[:30])}")
    if wrong:
        print(f"  wrong:  {' '.join(wrong[:30])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3, help="rendered scenes per base photo")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save", type=Path, help="write the rendered scenes here (PNG) to look at")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    backend = get_backend("yunet-sface", device="cpu", cache_dir=REPO / "data" / "models")
    reader = get_reader()

    race = [(f, decode_image(FACES / "groups" / f, max_pixels=120_000_000), labels) for f, labels in RACE_LABELS.items()]
    evaluate("real race photos", race, backend, reader, rng)

    scenes = []
    for base_name in SCENE_BASES:
        base = decode_image(FACES / "groups" / base_name, max_pixels=120_000_000)
        boxes = [f.box for f in detect_faces([base], backend)[0]]
        for k in range(args.scenes):
            image, labels = bib_scene(base, boxes, rng)
            scenes.append((f"{base_name[:-4]}#{k}", image, {lb.number for lb in labels}))
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                image.save(args.save / f"{base_name[:-4]}_{k}.png")
    evaluate("rendered bibs on real photos", scenes, backend, reader, rng)


if __name__ == "__main__":
    main()
