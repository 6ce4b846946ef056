"""B1 input pipeline: images/s delivered to the model, the project's cached tensor path vs a per-epoch
PIL + torchvision DataLoader pipeline like the competition baseline's.

"Delivered" = decoded, resized, augmented (random crop/flip/colour jitter), normalised, batched and on the
training device, i.e. what the training step consumes. Per image size (``--sizes``, H x W):

- project: ``cache.build_cache`` once (timed separately, into a fresh cache folder), then every epoch
  ``cache.BatchLoader`` (uint8 rows from the memmap; pinned memory + background prefetch on CUDA) and
  ``transforms.BatchAugment`` on the batch's device. Epoch 1 is reported with and without the cache build.
- baseline: a ``torch.utils.data.Dataset`` that opens each file with PIL, ``convert("RGB")`` and applies
  ``torchvision.transforms`` Resize -> RandomHorizontalFlip -> ColorJitter(0.2, 0.2, 0.2) -> ToTensor ->
  Normalize per image, every epoch; ``DataLoader(num_workers=2, shuffle=True)``; batches moved to the device.

Epochs alternate (baseline epoch e, project epoch e) so load changes on a shared machine hit both alike;
"from the second epoch on" is the median of epochs 2..E. Run:

    .venv/bin/python benchmarks/b1_input_pipeline.py            # 80 persons at 384x512, sizes 512x384 and 299x299
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Timer, demo_dataset, median, print_table, ratio, save_result  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BaselineDataset(torch.utils.data.Dataset):
    """The competition baseline's per-image path: PIL decode + torchvision transforms, every epoch."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: tuple[int, int], augment: bool = True):
        from torchvision import transforms

        self.paths, self.labels = paths, labels
        steps = [transforms.Resize(size)]
        if augment:
            steps += [transforms.RandomHorizontalFlip(), transforms.ColorJitter(0.2, 0.2, 0.2)]
        self.transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        return self.transform(img), int(self.labels[i])


def baseline_epoch(loader, device: torch.device) -> tuple[int, float]:
    n = 0
    started = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n, time.perf_counter() - started


def project_epoch(loader, transform, epoch: int, device: torch.device) -> tuple[int, float]:
    loader.set_epoch(epoch)
    if hasattr(transform, "reseed"):
        transform.reseed(epoch)
    n = 0
    started = time.perf_counter()
    for x, y in loader:
        out = transform(x)
        n += len(y)
    del out
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n, time.perf_counter() - started


MODES = ("augment", "plain")
"""augment: the training path (crop/flip/jitter + normalise); plain: the validation path (normalise only; the
baseline Resize -> ToTensor -> Normalize), which isolates decoding every epoch vs reading the cache."""


def run_b1(
    data_dir: Path,
    sizes: list[tuple[int, int]],
    epochs: int = 3,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "cpu",
    max_images: int | None = None,
    cache_root: Path | None = None,
    modes: tuple[str, ...] = MODES,
) -> dict:
    """Measure both paths at each size and mode; returns the result dict (see the module docstring)."""
    from maskcls_hpo.cache import BatchLoader, build_cache
    from maskcls_hpo.data import load_train
    from maskcls_hpo.transforms import BatchAugment, normalize

    dev = torch.device(device)
    samples = load_train(data_dir, verify=False)
    if max_images:
        samples = samples.iloc[:max_images]
    paths, labels = samples["path"].tolist(), samples["label"].to_numpy()
    with Image_size(paths[0]) as real:
        real_size = real
    n = len(paths)
    rows = []
    for size in sizes:
        cache_dir = Path(tempfile.mkdtemp(prefix="b1-cache-", dir=cache_root))
        try:
            with Timer() as build:
                cache = build_cache(paths, size=size, cache_dir=cache_dir, progress=False)
            loader = BatchLoader(cache.images, labels, np.arange(n), batch_size, shuffle=True, seed=0, device=dev)
            transforms = {
                "augment": BatchAugment(MEAN, STD, crop_scale=(0.8, 1.0), color_jitter=0.2, seed=0),
                "plain": lambda x: normalize(x, MEAN, STD),
            }
            for mode in modes:
                base = torch.utils.data.DataLoader(
                    BaselineDataset(paths, labels, size, augment=mode == "augment"),
                    batch_size=batch_size,
                    shuffle=True,
                    num_workers=workers,
                    pin_memory=dev.type == "cuda",
                )
                project_s, baseline_s = [], []
                for epoch in range(1, epochs + 1):
                    n_b, s_b = baseline_epoch(base, dev)
                    n_p, s_p = project_epoch(loader, transforms[mode], epoch, dev)
                    assert n_b == n_p == n
                    baseline_s.append(s_b)
                    project_s.append(s_p)
                    print(
                        f"  {size[0]}x{size[1]} {mode} epoch {epoch}: baseline {n / s_b:,.0f} images/s, "
                        f"project {n / s_p:,.0f} images/s",
                        flush=True,
                    )
                later_p, later_b = median(project_s[1:]), median(baseline_s[1:])
                rows.append(
                    {
                        "size_hw": list(size),
                        "mode": mode,
                        "images": n,
                        "cache_build_seconds": round(build.seconds, 3),
                        "cache_build_images_per_second": round(n / build.seconds, 1),
                        "project_epoch_seconds": [round(v, 4) for v in project_s],
                        "baseline_epoch_seconds": [round(v, 4) for v in baseline_s],
                        "project_epoch1_images_per_second": round(n / project_s[0], 1),
                        "project_epoch1_with_build_images_per_second": round(n / (project_s[0] + build.seconds), 1),
                        "baseline_epoch1_images_per_second": round(n / baseline_s[0], 1),
                        "project_images_per_second": round(n / later_p, 1),
                        "baseline_images_per_second": round(n / later_b, 1),
                        "speedup_epoch2_on": ratio(later_b, later_p),
                        "speedup_epoch1_with_build": ratio(baseline_s[0], project_s[0] + build.seconds),
                    }
                )
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "settings": {
            "data_dir": str(data_dir),
            "real_size_hw": list(real_size),
            "epochs": epochs,
            "batch_size": batch_size,
            "baseline_workers": workers,
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "cache_build_threads": "all CPUs",
            "augment": "project: BatchAugment crop (0.8, 1.0) + flip + colour jitter 0.2 + normalise; "
            "baseline: Resize, RandomHorizontalFlip, ColorJitter(0.2,0.2,0.2), ToTensor, "
            "Normalize",
            "plain": "project: normalize; baseline: Resize, ToTensor, Normalize",
        },
        "target": "project >= 10x baseline images/s from the second epoch on",
        "sizes": rows,
    }


class Image_size:  # noqa: N801 - tiny context manager: (H, W) of one image file
    def __init__(self, path: str):
        from PIL import Image

        self.im = Image.open(path)

    def __enter__(self) -> tuple[int, int]:
        return self.im.size[1], self.im.size[0]

    def __exit__(self, *exc: object) -> None:
        self.im.close()


def show(result: dict, title: str) -> None:
    rows = []
    for r in result["sizes"]:
        rows.append(
            [
                f"{r['size_hw'][0]}x{r['size_hw'][1]} {r['mode']}",
                r["baseline_images_per_second"],
                r["project_images_per_second"],
                r["speedup_epoch2_on"],
                r["baseline_epoch1_images_per_second"],
                r["project_epoch1_with_build_images_per_second"],
                r["cache_build_seconds"],
            ]
        )
    print_table(
        title,
        [
            "size (HxW), mode",
            "baseline img/s (ep>=2)",
            "project img/s (ep>=2)",
            "speed-up",
            "baseline img/s ep1",
            "project img/s ep1 incl. build",
            "cache build s",
        ],
        rows,
    )


def parse_hw(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO / "storage" / "bench" / "b1_384x512",
        help="dataset folder (written with demo-data when missing)",
    )
    ap.add_argument("--persons", type=int, default=80, help="persons of the demo set written when --data is missing")
    ap.add_argument("--sizes", default="512x384,299x299", help="comma-separated HxW training sizes")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--modes", default="augment,plain", help="augment (training path), plain (validation path)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the project's path (1: on a shared machine OpenMP threads that wait for "
        "each other cost more than they give; the baseline's workers also run 1 thread each)",
    )
    ap.add_argument("--name", default="b1_input_pipeline")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    demo_dataset(args.data, args.persons, (384, 512))
    sizes = [parse_hw(s) for s in args.sizes.split(",")]
    result = run_b1(
        args.data,
        sizes,
        args.epochs,
        args.batch_size,
        args.workers,
        args.device,
        args.max_images,
        modes=tuple(args.modes.split(",")),
    )
    path = save_result(args.name, result)
    show(
        result,
        f"B1 input pipeline on {args.device} ({result['sizes'][0]['images']} images, batch "
        f"{args.batch_size}, baseline workers {args.workers})",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
