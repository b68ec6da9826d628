"""Calibrate the match threshold of each face backend on ../shared/faces (not a test).

    .venv/bin/python bench/calibrate.py [--faces ../shared/faces] [--backends yunet-sface,facenet] [--engine opencv]
    .venv/bin/python bench/calibrate.py --race [--backends yunet-sface]     # 24 MP photos, the worker's path

Protocol. Identity photos are the selfies; event photos are canvases that paste the other photos
of the same people next to strangers: photos of people who are not enrolled, and group photos
(none of the 25 identities is in them). Each fold enrols half the people with one photo as their
selfie (5 photos x 2 halves = 10 folds), detects every face in every canvas, and runs the real
assignment (app.services.matching.assign: best runner per face, best face per runner and photo).
The labelled person of a pasted photo is its central face; other faces in it are bystanders.

Reported per threshold: recall (found / pasted photos of enrolled people, missed detections
included), false matches per selfie after the assignment rules, impostor faces above the
threshold per selfie before them, and the share of selfies with at least one false match.
With `--race` the event photos are 24 MP JPEGs (6000x4000, sensor-like noise, quality 90) that
paste the identity photos at 0.5-3x (faces of about 30-200 px, the sizes of runners in a race
photo) beside an upscaled group photo, and faces come from the worker's own path for event photos
(models.pipeline.analyse_files: one full decode, detection on its 1600 px copy, crops around faces),
so a change to how event photos are decoded and cut can be judged by recall and false matches.

The recommendation is the lowest threshold with no false match here, raised to the held-out
reference of shared/MODELS.md where that is higher (race photos have harder strangers: other
runners of the same race).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.services.matching import assign  # noqa: E402
from app.services.runners import choose_face  # noqa: E402
from app.errors import Unprocessable  # noqa: E402
from models.image import decode_image  # noqa: E402
from models.pipeline import PhotoAnalysis, analyse_files, analyse_images  # noqa: E402

THRESHOLDS = [round(t, 2) for t in np.arange(0.26, 0.72, 0.02)]
# shared/MODELS.md, held-out set (188 people, race photos): SFace's lowest threshold with no
# definite false match on race photos; for facenet, its threshold at FAR 1e-4 (0.614).
HELD_OUT_REFERENCE = {"yunet-sface": 0.48, "facenet": 0.61}
STRANGER = "stranger"


@dataclass
class Tile:
    person: str
    index: int  # photo number, 1..5
    box: tuple[int, int, int, int]


@dataclass
class EventFace:
    canvas: int
    label: str  # person, STRANGER (group photo) or "bystander:<person>/<n>"
    source: tuple[str, int] | None  # (person, photo number) of the tile it was found in
    embedding: np.ndarray


def build_canvases(faces_dir: Path, seed: int = 7) -> tuple[list[Image.Image], list[list[Tile]]]:
    """Every identity photo pasted once, three per canvas at random scales, beside a group photo."""
    rng = np.random.default_rng(seed)
    photos = [(p.parent.name, int(p.stem), p) for p in sorted((faces_dir / "identities").glob("*/*.jpg"))]
    groups = sorted((faces_dir / "groups").glob("*.jpg"))
    order = rng.permutation(len(photos))
    canvases, layouts = [], []
    for c, start in enumerate(range(0, len(order), 3)):
        pieces = [photos[i] for i in order[start:start + 3]]
        group = Image.open(groups[c % len(groups)]).convert("RGB")
        group.thumbnail((900, 900))
        tiles_img = []
        for person, index, path in pieces:
            img = Image.open(path).convert("RGB")
            img.thumbnail((150, 150))  # a few identity photos are full-size; LFW copies are 150 px
            scale = float(rng.uniform(0.6, 1.6))
            tiles_img.append((person, index, img.resize((max(1, round(img.width * scale)),
                                                         max(1, round(img.height * scale))))))
        width = sum(t[2].width for t in tiles_img) + group.width + 20 * (len(tiles_img) + 2)
        height = max([group.height] + [t[2].height for t in tiles_img]) + 40
        canvas = Image.new("RGB", (width, height), (128, 128, 128))
        x, tiles = 20, []
        for person, index, img in tiles_img:
            canvas.paste(img, (x, 20))
            tiles.append(Tile(person, index, (x, 20, x + img.width, 20 + img.height)))
            x += img.width + 20
        canvas.paste(group, (x, 20))
        canvases.append(canvas)
        layouts.append(tiles)
    return canvases, layouts


RACE_SIZE = (6000, 4000)
RACE_TILES = 6  # identity photos per race canvas, one per cell of a 3 x 2 grid left of the group photo
RACE_SCALES = (0.5, 3.0)  # log-uniform: LFW's ~65 px faces at about 30-200 px
RACE_MAX_PIXELS = 60_000_000


def build_race_canvases(faces_dir: Path, out: Path, seed: int = 11) -> tuple[list[Path], list[list[Tile]]]:
    """Every identity photo pasted once into 24 MP race-like JPEGs (cached in `out` by name)."""
    rng = np.random.default_rng(seed)
    photos = [(p.parent.name, int(p.stem), p) for p in sorted((faces_dir / "identities").glob("*/*.jpg"))]
    groups = sorted((faces_dir / "groups").glob("*.jpg"))
    order = rng.permutation(len(photos))
    out.mkdir(parents=True, exist_ok=True)
    width, height = RACE_SIZE
    group_w = width // 3
    cell_w, cell_h = (width - group_w) // 3, height // 2
    paths, layouts = [], []
    for c, start in enumerate(range(0, len(order), RACE_TILES)):
        tiles = []
        canvas = Image.new("RGB", RACE_SIZE, (110, 115, 105))
        group = Image.open(groups[c % len(groups)]).convert("RGB")
        f = min(group_w / group.width, height / group.height)
        group = group.resize((int(group.width * f), int(group.height * f)), Image.Resampling.BICUBIC)
        canvas.paste(group, (width - group_w + (group_w - group.width) // 2, (height - group.height) // 2))
        for cell, i in enumerate(order[start:start + RACE_TILES]):
            person, index, path = photos[i]
            img = Image.open(path).convert("RGB")
            img.thumbnail((150, 150))
            scale = float(np.exp(rng.uniform(*np.log(RACE_SCALES))))
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BICUBIC)
            left = (cell % 3) * cell_w + int(rng.integers(0, cell_w - img.width))
            top = (cell // 3) * cell_h + int(rng.integers(0, cell_h - img.height))
            canvas.paste(img, (left, top))
            tiles.append(Tile(person, index, (left, top, left + img.width, top + img.height)))
        path = out / f"race_{seed}_{c:02d}.jpg"
        if not path.exists():
            noise = np.random.default_rng(seed * 1000 + c).normal(0, 4, (height, width, 1)).astype(np.int16)
            pixels = np.clip(np.asarray(canvas, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
        layouts.append(tiles)
    return paths, layouts


def race_faces(paths: list[Path], backend) -> list:
    """The faces of each race canvas through the worker's path, one photo at a time as it runs."""
    found = []
    for path in paths:
        (result,) = analyse_files([path], backend, max_pixels=RACE_MAX_PIXELS, detect_long_side=1600,
                                  min_face_px=24)
        assert isinstance(result, PhotoAnalysis), result
        found.append(result.faces)
    return found


def label_faces(results, layouts) -> list[EventFace]:
    """Each found face labelled by the pasted tile that holds its centre (STRANGER outside any)."""
    faces: list[EventFace] = []
    for c, (found, tiles) in enumerate(zip(results, layouts)):
        by_tile: dict[int, list] = {}
        for face in found:
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            tile = next((k for k, t in enumerate(tiles)
                         if t.box[0] <= cx < t.box[2] and t.box[1] <= cy < t.box[3]), None)
            if tile is None:
                faces.append(EventFace(c, STRANGER, None, face.embedding))
            else:
                by_tile.setdefault(tile, []).append(face)
        for k, in_tile in by_tile.items():
            tile = tiles[k]
            # LFW labels the central face of each photo.
            x1, y1, x2, y2 = tile.box
            in_tile.sort(key=lambda f: abs((f.box[0] + f.box[2] - x1 - x2) / 2)
                         + abs((f.box[1] + f.box[3] - y1 - y2) / 2))
            for rank, face in enumerate(in_tile):
                label = tile.person if rank == 0 else f"bystander:{tile.person}/{tile.index}"
                faces.append(EventFace(c, label, (tile.person, tile.index), face.embedding))
    return faces


def selfie_embeddings(faces_dir: Path, backend) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for path in sorted((faces_dir / "identities").glob("*/*.jpg")):
        image = decode_image(path, max_pixels=50_000_000)
        try:
            face = choose_face(analyse_images([image], backend, detect_long_side=1600, min_face_px=8)[0])
        except Unprocessable:
            continue  # the API would refuse this selfie (no face, several faces, too small)
        out[(path.parent.name, int(path.stem))] = face.embedding
    return out


def evaluate(faces: list[EventFace], layouts, selfies, people: list[str]) -> dict[float, dict]:
    totals = {t: {"found": 0, "genuine": 0, "false": 0, "impostors": 0, "selfies": 0, "with_false": 0}
              for t in THRESHOLDS}
    for index in range(1, 6):
        for half in (0, 1):
            enrolled = [p for k, p in enumerate(people) if k % 2 == half and (p, index) in selfies]
            # The selfie's own pasted copy is not an event photo of it: leave that tile out.
            keep = [f for f in faces
                    if f.source is None or not (f.source[1] == index and f.source[0] in enrolled)]
            runners = np.stack([selfies[(p, index)] for p in enrolled])
            matrix = np.stack([f.embedding for f in keep])
            labels = np.array([f.label for f in keep], object)
            photo = np.array([f.canvas for f in keep])
            sims = matrix @ runners.T
            genuine = sum(1 for tiles in layouts for t in tiles if t.person in enrolled and t.index != index)
            for t in THRESHOLDS:
                result = assign(sims, photo, t)
                right = labels[result.face] == np.array(enrolled, object)[result.runner]
                wrong_per_runner = np.bincount(result.runner[~right], minlength=len(enrolled))
                impostor = sims >= t
                impostor &= labels[:, None] != np.array(enrolled, object)[None, :]
                row = totals[t]
                row["found"] += int(right.sum())
                row["genuine"] += genuine
                row["false"] += int((~right).sum())
                row["impostors"] += int(impostor.sum())
                row["selfies"] += len(enrolled)
                row["with_false"] += int((wrong_per_runner > 0).sum())
    return totals


def report(name: str, totals: dict[float, dict], n_faces: int, n_canvases: int) -> float:
    print(f"\n## {name}: {n_canvases} event photos, {n_faces} faces, "
          f"{totals[THRESHOLDS[0]]['selfies']} selfie trials (10 folds)\n")
    print("| threshold | recall | false matches / selfie | selfies with a false match | impostor faces >= t / selfie |")
    print("|---|---|---|---|---|")
    for t in THRESHOLDS:
        r = totals[t]
        print(f"| {t:.2f} | {r['found'] / max(r['genuine'], 1):.1%} | {r['false'] / r['selfies']:.3f} | "
              f"{r['with_false'] / r['selfies']:.1%} | {r['impostors'] / r['selfies']:.3f} |")
    clean = [t for t in THRESHOLDS if all(totals[u]["false"] == 0 for u in THRESHOLDS if u >= t)]
    measured = clean[0] if clean else THRESHOLDS[-1]
    recommended = max(measured, HELD_OUT_REFERENCE.get(name, 0.0))
    r = totals[min(THRESHOLDS, key=lambda u: abs(u - recommended))]
    print(f"\nlowest threshold with no false match on this set: {measured:.2f}; "
          f"held-out reference: {HELD_OUT_REFERENCE.get(name, 'none')}; "
          f"recommended: {recommended:.2f} (recall here {r['found'] / max(r['genuine'], 1):.1%})")
    return recommended


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--backends", default="yunet-sface,facenet")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "data" / "models")
    parser.add_argument("--engine", default=None, help="yunet-sface's engine: openvino (default on CPU), opencv")
    parser.add_argument("--race", action="store_true", help="24 MP race-like event photos, the worker's path")
    parser.add_argument("--race-dir", type=Path, default=Path(tempfile.gettempdir()) / "finishline-calibrate-race")
    parser.add_argument("--seed", type=int, default=11, help="with --race: the canvases' layout")
    args = parser.parse_args()
    from models.loader import get_backend

    people = sorted(p.name for p in (args.faces / "identities").iterdir() if p.is_dir())
    if args.race:
        canvases, layouts = build_race_canvases(args.faces, args.race_dir, seed=args.seed)
    else:
        canvases, layouts = build_canvases(args.faces)
    chosen = {}
    for name in args.backends.split(","):
        try:
            backend = get_backend(name, device="cpu", cache_dir=args.cache_dir, engine=args.engine)
        except Exception as exc:  # noqa: BLE001 - a backend missing its weights is skipped, not fatal
            print(f"\n## {name}: not available ({exc})")
            continue
        started = time.perf_counter()
        if args.race:
            found = race_faces(canvases, backend)
        else:
            found = analyse_images(canvases, backend, detect_long_side=1600, min_face_px=24)
        faces = label_faces(found, layouts)
        selfies = selfie_embeddings(args.faces, backend)
        totals = evaluate(faces, layouts, selfies, people)
        chosen[name] = report(name, totals, len(faces), len(canvases))
        print(f"({time.perf_counter() - started:.1f} s)")
    print("\nDEFAULT_MATCH_THRESHOLDS =", {k: round(float(v), 2) for k, v in chosen.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
