"""Decoded-image cache and batches: every image is decoded and resized once, shared by all trials.

:func:`build_cache` decodes a list of image files to RGB, resizes them to ``(H, W)`` and writes one
``(N, 3, H, W)`` uint8 array to ``<cache_dir>/<fingerprint>.u8`` (raw C-order bytes) plus
``<fingerprint>.json`` (shape, size, interpolation). The fingerprint is a sha256 over the absolute
paths, file sizes and modification times (ns) and the resize, so any changed, added or removed file
or a new size gives a new cache. Every later call, in any process on the machine, memory-maps the
finished file read-only (the OS page cache then holds the pixels once for all workers).

Concurrency: the array is written to a temporary file and ``os.replace``-d into place before the
meta file, and a reader only trusts a cache whose meta file exists, so nobody sees a half-written
cache; builders of the same fingerprint take an exclusive ``fcntl.flock`` on ``<fingerprint>.lock``,
so two processes (or threads) asking at once decode the images once.

:class:`BatchLoader` serves ``(images (B, 3, H, W) uint8, labels (B,) int64)`` torch tensors from such
an array; augmentation and normalisation then run on the batch as tensor ops (``transforms.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from maskcls_hpo._util import atomic_path, atomic_write_text, check_cache_dir, progress_bar
from maskcls_hpo.data import DataError

if TYPE_CHECKING:
    import torch

Batch = tuple["torch.Tensor", "torch.Tensor"]
"""One batch: images `(B, 3, H, W)` uint8 and labels `(B,)` int64."""

try:  # NOTE: fcntl is POSIX only; without it concurrent builders may both decode (still never corrupt).
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["ImageCache", "build_cache", "find_cache", "decode_image", "fingerprint", "BatchLoader", "INTERPOLATIONS"]

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
"""Resize filters by config name (``TrainConfig.interpolation``) -> PIL resampling filter."""

CACHE_VERSION = 1
"""Bumped whenever the decoding changes, so old caches are not reused."""

_DRAFT_GAP = 2.0
"""JPEGs are decoded at a reduced DCT scale no smaller than this multiple of the target size
(the same idea as ``Image.thumbnail(reducing_gap=2.0)``): much faster, visually the same."""


@dataclass
class ImageCache:
    """A finished cache.

    Attributes:
        images: ``(N, 3, H, W)`` uint8 read-only ``np.memmap``, RGB, row ``i`` = ``paths[i]``.
        fingerprint: sha256 hex over (paths, sizes, mtimes in ns, H, W, interpolation, version).
        decoded: images decoded by this call (0 when an existing cache was reused).
        path: the ``.u8`` file.
    """

    images: NDArray[np.uint8]
    fingerprint: str
    decoded: int
    path: Path

    def __len__(self) -> int:
        return len(self.images)


def decode_image(path: str | Path, size: tuple[int, int], interpolation: str = "bilinear") -> NDArray[np.uint8]:
    """Decode one image to RGB and resize it: ``(3, H, W)`` uint8 for ``size=(H, W)``.

    Grayscale, palette and alpha images are converted with ``Image.convert("RGB")`` (alpha is dropped).
    JPEGs much larger than the target are decoded at a reduced scale first (``Image.draft``).

    Raises:
        DataError: the file is missing or cannot be decoded (names the path).
        ValueError: a bad ``size`` or ``interpolation``.
    """
    height, width = _check_size(size)
    resample = _resample(interpolation)
    try:
        with Image.open(path) as im:
            im.draft(None, (math.ceil(width * _DRAFT_GAP), math.ceil(height * _DRAFT_GAP)))
            rgb = im.convert("RGB")
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), resample=resample)  # PIL sizes are (W, H)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
        raise DataError(
            f"{path}: cannot decode image ({type(err).__name__}: {err}); replace or remove the file"
        ) from None


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"size must be (height, width) in pixels, both >= 1, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _resample(interpolation: str) -> Image.Resampling:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return INTERPOLATIONS[interpolation]


def fingerprint(paths: Sequence[str | Path], size: tuple[int, int], interpolation: str = "bilinear") -> str:
    """sha256 hex of (absolute paths, file sizes in bytes, mtimes in ns, H, W, interpolation, version).

    Raises:
        DataError: naming every file that does not exist.
    """
    height, width = _check_size(size)
    _resample(interpolation)
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, height, width, interpolation, len(paths)]).encode())
    missing = []
    for p in paths:
        p = os.path.abspath(p)
        try:
            st = os.stat(p)
        except OSError:
            missing.append(f"{p}: image not found; the file list changed since it was loaded")
            continue
        digest.update(f"\n{p}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    if missing:
        raise DataError(missing)
    return digest.hexdigest()


def _open_existing(data_path: Path, meta_path: Path, shape: tuple[int, ...]) -> NDArray[np.uint8] | None:
    """Memory-map a finished cache, or None if it is absent, incomplete or does not match ``shape``."""
    if not meta_path.is_file() or not data_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if tuple(meta.get("shape", ())) != shape or data_path.stat().st_size != math.prod(shape):
        return None
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (per open file, so it also works between threads)."""
    with open(lock_path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(32, cpus))


def find_cache(
    paths: Sequence[str | Path],
    size: tuple[int, int],
    cache_dir: str | Path = "storage/cache",
    interpolation: str = "bilinear",
) -> ImageCache | None:
    """The finished cache of ``paths`` at ``size=(H, W)``, or None when there is none; creates nothing.

    A cache exists only when every one of its images was decoded, and its fingerprint changes with any file's
    size or mtime, so a found cache means these very files all decode (callers may skip decoding them again).

    Raises:
        DataError: naming every file that does not exist. ValueError: empty ``paths``, bad ``size``.
    """
    if len(paths) == 0:
        raise ValueError("find_cache needs at least one image path")
    height, width = _check_size(size)
    key = fingerprint(paths, (height, width), interpolation)
    cache_dir = Path(cache_dir)
    images = _open_existing(cache_dir / f"{key}.u8", cache_dir / f"{key}.json", (len(paths), 3, height, width))
    return None if images is None else ImageCache(images, key, 0, cache_dir / f"{key}.u8")


def build_cache(
    paths: Sequence[str | Path],
    size: tuple[int, int],
    cache_dir: str | Path = "storage/cache",
    workers: int | None = None,
    progress: bool = True,
    interpolation: str = "bilinear",
) -> ImageCache:
    """Decode ``paths`` once into a shared ``(N, 3, H, W)`` uint8 memmap for ``size=(H, W)``; reuse it after.

    The cache lives at ``<cache_dir>/<fingerprint>.u8`` (+ ``.json`` meta, + ``.lock``); see the module
    docstring for the fingerprint and the concurrency guarantees. Building decodes on ``workers``
    threads (default: the CPUs available; PIL releases the GIL while decoding and resizing) and shows
    a rich progress bar on stderr when ``progress``. Row order follows ``paths``.

    Returns:
        :class:`ImageCache` with ``decoded`` = images decoded by this call (0 when reused).

    Raises:
        DataError: files that are missing or cannot be decoded, every one named; `cache_dir` (or a folder above
            it) is a file; nothing is written.
        ValueError: empty ``paths``, a bad ``size`` or ``interpolation``.
    """
    if len(paths) == 0:
        raise ValueError("build_cache needs at least one image path")
    height, width = _check_size(size)
    key = fingerprint(paths, (height, width), interpolation)
    cache_dir = check_cache_dir(cache_dir, DataError)
    cache_dir.mkdir(parents=True, exist_ok=True)
    data_path = cache_dir / f"{key}.u8"
    meta_path = cache_dir / f"{key}.json"
    shape = (len(paths), 3, height, width)

    images = _open_existing(data_path, meta_path, shape)
    if images is not None:
        return ImageCache(images, key, 0, data_path)
    with _exclusive(cache_dir / f"{key}.lock"):
        images = _open_existing(data_path, meta_path, shape)  # another process may have just built it
        if images is not None:
            return ImageCache(images, key, 0, data_path)
        _write_cache(paths, shape, data_path, meta_path, workers, progress, interpolation)
    images = _open_existing(data_path, meta_path, shape)
    assert images is not None
    return ImageCache(images, key, len(paths), data_path)


def _write_cache(
    paths: Sequence[str | Path],
    shape: tuple[int, int, int, int],
    data_path: Path,
    meta_path: Path,
    workers: int | None,
    progress: bool,
    interpolation: str,
) -> None:
    n, _, height, width = shape
    started = time.perf_counter()
    with atomic_path(data_path) as tmp:
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)

        def work(i: int, out: NDArray[np.uint8] = out) -> str | None:
            try:
                out[i] = decode_image(paths[i], (height, width), interpolation)
            except DataError as err:
                return err.problems[0]
            return None

        problems: list[str] = []
        with ThreadPoolExecutor(max_workers=workers or _default_workers(), thread_name_prefix="cache") as pool:
            futures = [pool.submit(work, i) for i in range(n)]
            with progress_bar(n, f"caching {n} images at {height}x{width}", enabled=progress) as advance:
                for future in as_completed(futures):
                    problem = future.result()
                    if problem is not None:
                        problems.append(problem)
                    advance()
        if problems:
            raise DataError(sorted(problems))
        out.flush()
        del out
    meta = {
        "version": CACHE_VERSION,
        "shape": list(shape),
        "dtype": "uint8",
        "layout": "N,3,H,W RGB",
        "interpolation": interpolation,
        "images": n,
        "first_path": os.path.abspath(paths[0]),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    # NOTE the meta file last: its presence says the array is complete (module docstring).
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")


class BatchLoader:
    """Batches from a ``(N, 3, H, W)`` uint8 array: ``(images (B, 3, H, W) uint8, labels (B,) int64)`` tensors.

    Args:
        images: the cached array (``ImageCache.images``) or any ``(N, 3, H, W)`` uint8 array.
        labels: ``(N,)`` integer labels for every row of ``images``, or None (labels are then -1).
        indices: the rows to serve (e.g. the train part of :func:`data.split_by_person`).
        batch_size: rows per batch (>= 1).
        shuffle: new order every epoch, drawn from ``numpy.random.default_rng([seed, epoch])`` so the
            same (seed, epoch) always gives the same batches, in any process.
        seed: see ``shuffle``.
        drop_last: drop the last, smaller batch (default False: every index is served once per epoch).
        device: "cpu" yields CPU tensors; a CUDA device yields tensors already on it: rows are read
            into pinned host memory and copied with ``non_blocking=True`` while a background thread
            prepares the next batches.
        prefetch: batches prepared ahead on a background thread (default 2 on CUDA, 0 = none on CPU).

    Within a batch, rows come in ascending index order (sorted reads from the memmap); with
    ``shuffle=False`` and ascending ``indices`` every batch follows ``indices``. Call
    :meth:`set_epoch` before each epoch to reshuffle, like ``DistributedSampler``.

    Raises:
        ValueError: bad shapes, an index out of range or ``batch_size < 1``.
    """

    def __init__(
        self,
        images: NDArray[np.uint8],
        labels: ArrayLike | None,
        indices: ArrayLike,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        prefetch: int | None = None,
    ) -> None:
        import torch  # lazy: torch (the cache itself is numpy; `launch` builds it without torch)

        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be an (N, 3, H, W) uint8 array, got {images.shape} {images.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(images)
        self.images = images
        if labels is None:
            self.labels = np.full(n, -1, dtype=np.int64)
        else:
            self.labels = np.asarray(labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},) to match images, got {self.labels.shape}")
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}), got {self.indices.min()}..{self.indices.max()}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self.prefetch = (2 if self.device.type == "cuda" else 0) if prefetch is None else int(prefetch)
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch: ``ceil(len(indices) / batch_size)`` (``floor`` with ``drop_last``)."""
        if self.drop_last:
            return len(self.indices) // self.batch_size
        return math.ceil(len(self.indices) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from now on (deterministic per (seed, epoch))."""
        self.epoch = int(epoch)

    def order(self) -> NDArray[np.int64]:
        """The row indices in the order this epoch serves them (before sorting within each batch)."""
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def _batches(self) -> Iterator[NDArray[np.int64]]:
        order = self.order()
        for b in range(len(self)):
            yield np.sort(order[b * self.batch_size : (b + 1) * self.batch_size])

    def _read(self, idx: NDArray[np.int64], pin: bool) -> Batch:
        import torch  # lazy: torch

        if pin:  # read straight into page-locked memory (indices were checked, so mode="clip" is safe)
            x = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
            np.take(self.images, idx, axis=0, out=x.numpy(), mode="clip")
        else:  # NOTE: plain fancy indexing reads a sorted memmap batch faster than np.take(out=...)
            x = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
        y = torch.from_numpy(self.labels[idx])
        return x, y

    def __iter__(self) -> Iterator[Batch]:
        batches = list(self._batches())  # this epoch's order, fixed before any batch is read
        if self.device.type == "cuda":
            yield from self._prefetched(batches, self._cuda_transfer())
        elif self.prefetch > 0:
            yield from self._prefetched(batches, lambda idx: self._read(idx, pin=False))
        else:
            for idx in batches:
                yield self._read(idx, pin=False)

    def _cuda_transfer(self) -> Callable[[NDArray[np.int64]], Batch]:
        # NOTE: the copies are queued on the consumer's current stream (captured here) from the producer
        # thread; torch's caching host allocator keeps each pinned buffer alive until its copy has finished.
        import torch  # lazy: torch

        stream = torch.cuda.current_stream(self.device)

        def transfer(idx: NDArray[np.int64]) -> Batch:
            x, y = self._read(idx, pin=True)
            with torch.cuda.stream(stream):
                return x.to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)

        return transfer

    def _prefetched(
        self, batches: list[NDArray[np.int64]], make: Callable[[NDArray[np.int64]], Batch]
    ) -> Iterator[Batch]:
        """Yield ``make(idx)`` for each batch, computed up to ``prefetch`` batches ahead on a thread."""
        done = object()
        ready: queue.Queue[object] = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for idx in batches:
                    if not put(make(idx)):
                        return
                put(done)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer and raised there
                put(err)

        thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield cast("Batch", item)  # the only other thing `produce` puts
        finally:  # also when the consumer stops early (break, exception): end the producer
            stop.set()
            thread.join()
