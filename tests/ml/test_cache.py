"""Tests for maskcls_hpo.cache: decode once, reuse, invalidate, concurrent builders, RGB conversion, batches."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskcls_hpo import cache, data
from maskcls_hpo.cache import BatchLoader, build_cache, decode_image
from maskcls_hpo.data import DataError


@pytest.fixture
def layout_paths(tmp_path, make_layout):
    """Paths of a 4-person layout (28 images, 24x32 = W x H, mixed extensions and modes)."""
    samples = data.load_train(make_layout(tmp_path / "d", size=(24, 32)), verify=False)
    return samples["path"].tolist()


def test_second_build_decodes_nothing(tmp_path, layout_paths):
    first = build_cache(layout_paths, size=(16, 12), cache_dir=tmp_path / "c", progress=False)
    assert first.decoded == 28
    assert first.images.shape == (28, 3, 16, 12) and first.images.dtype == np.uint8
    assert first.path == tmp_path / "c" / f"{first.fingerprint}.u8"
    assert (tmp_path / "c" / f"{first.fingerprint}.json").is_file()
    assert first.path.stat().st_size == 28 * 3 * 16 * 12
    second = build_cache(layout_paths, size=(16, 12), cache_dir=tmp_path / "c", progress=True)
    assert second.decoded == 0
    assert second.fingerprint == first.fingerprint
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert not second.images.flags.writeable
    # no temporary files are left behind
    assert sorted(p.suffix for p in (tmp_path / "c").iterdir()) == [".json", ".lock", ".u8"]


def test_rows_follow_paths_and_pixels_are_rgb(tmp_path, layout_paths, layout_helpers):
    layout_color, layout_gray = layout_helpers.color, layout_helpers.gray
    mask_files = layout_helpers.mask_files
    images = build_cache(layout_paths, size=(8, 6), cache_dir=tmp_path / "c", progress=False).images
    mask3 = mask_files.index("mask3")  # RGBA PNG: alpha dropped, colour exact
    assert layout_paths[mask3].endswith("mask3.png")
    assert images[mask3].reshape(3, -1).T.tolist() == [list(layout_color(0, mask3))] * 48
    mask2 = mask_files.index("mask2")  # grayscale JPEG: 3 equal channels
    gray = images[mask2].astype(int)
    assert gray.shape == (3, 8, 6)
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()
    assert abs(gray.mean() - layout_gray(layout_color(0, mask2))) <= 2
    normal = 7 + mask_files.index("normal")  # person 1's normal.png (RGB PNG): exact
    assert images[normal][:, 0, 0].tolist() == list(layout_color(1, 6))


def test_decode_image_converts_modes(tmp_path, layout_helpers):
    write_solid_image = layout_helpers.write_image
    for mode in ("L", "RGBA", "RGB"):
        path = write_solid_image(tmp_path / f"{mode}.png", (10, 200, 30), (40, 20), mode)
        out = decode_image(path, (5, 10))  # (H, W)
        assert out.shape == (3, 5, 10) and out.dtype == np.uint8
        expected = [124] * 3 if mode == "L" else [10, 200, 30]  # L = 0.299*10 + 0.587*200 + 0.114*30 = 123.8
        assert out[:, 2, 3].tolist() == expected
    palette = tmp_path / "p.png"
    Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    assert Image.open(palette).mode == "P"
    assert decode_image(palette, (4, 4))[:, 0, 0].tolist() == [10, 200, 30]


def test_changed_file_changes_fingerprint_and_rebuilds(tmp_path, layout_paths, layout_helpers):
    kw = dict(size=(16, 12), cache_dir=tmp_path / "c", progress=False)
    first = build_cache(layout_paths, **kw)
    st = os.stat(layout_paths[5])
    os.utime(layout_paths[5], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touch
    touched = build_cache(layout_paths, **kw)
    assert touched.fingerprint != first.fingerprint and touched.decoded == 28
    assert build_cache(layout_paths, **kw).decoded == 0
    # rewrite a file with new pixels (and put its old mtime back): the size changes, so does the cache
    target = layout_paths[13]
    assert target.endswith(".png")
    st = os.stat(target)
    layout_helpers.write_image(Path(target), (1, 2, 3), (50, 40))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    rewritten = build_cache(layout_paths, **kw)
    assert rewritten.decoded == 28 and rewritten.fingerprint != touched.fingerprint
    assert rewritten.images[13][:, 0, 0].tolist() == [1, 2, 3]
    # a different size or interpolation is a different cache too
    assert build_cache(layout_paths, size=(8, 6), cache_dir=tmp_path / "c", progress=False).decoded == 28
    assert build_cache(layout_paths, interpolation="nearest", **kw).decoded == 28


def test_concurrent_builders_decode_once(tmp_path, layout_paths):
    results = []

    def build():
        results.append(build_cache(layout_paths, size=(16, 12), cache_dir=tmp_path / "c", workers=2, progress=False))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.decoded for r in results) == [0, 0, 28]
    assert len({r.fingerprint for r in results}) == 1
    assert all(np.array_equal(r.images, results[0].images) for r in results)


def test_unreadable_image_is_named_and_nothing_is_written(tmp_path, layout_paths):
    bad = [layout_paths[3], layout_paths[9]]
    for p in bad:
        with open(p, "wb") as f:
            f.write(b"garbage")
    with pytest.raises(DataError) as info:
        build_cache(layout_paths, size=(16, 12), cache_dir=tmp_path / "c", progress=False)
    assert len(info.value.problems) == 2
    assert [line.split(": cannot decode")[0] for line in info.value.problems] == sorted(bad)
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".lock"]
    with pytest.raises(DataError, match="image not found"):
        build_cache([*layout_paths, str(tmp_path / "gone.jpg")], size=(16, 12), cache_dir=tmp_path / "c")


def test_half_written_cache_is_not_trusted(tmp_path, layout_paths):
    kw = dict(size=(16, 12), cache_dir=tmp_path / "c", progress=False)
    key = cache.fingerprint(layout_paths, (16, 12))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / f"{key}.u8").write_bytes(b"\x00" * 100)  # an array without its meta file
    built = build_cache(layout_paths, **kw)
    assert built.decoded == 28 and built.path.stat().st_size == 28 * 3 * 16 * 12


# --- BatchLoader --------------------------------------------------------------------------------------


def _loader_inputs(n=30):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 4, 2), dtype=np.uint8)
    return images, np.arange(n) + 100  # label of row i = 100 + i, pixel value of row i = i


def test_batch_loader_serves_every_index_once_with_a_partial_batch():
    images, labels = _loader_inputs()
    indices = np.arange(3, 26)  # 23 rows
    loader = BatchLoader(images, labels, indices, batch_size=5, shuffle=True, seed=0)
    assert len(loader) == 5
    batches = list(loader)
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    served = torch.cat([y for _, y in batches]) - 100
    assert sorted(served.tolist()) == list(range(3, 26))
    x, y = batches[0]
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 4, 2) and y.dtype == torch.int64
    assert (x[:, 0, 0, 0].long() == y - 100).all()  # images and labels stay paired
    assert y.tolist() == sorted(y.tolist())  # within a batch: ascending rows


def test_batch_loader_shuffle_is_deterministic_per_seed_and_epoch():
    images, labels = _loader_inputs()

    def epoch_order(seed, epoch):
        loader = BatchLoader(images, labels, np.arange(30), batch_size=4, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return [tuple(y.tolist()) for _, y in loader]

    assert epoch_order(1, 0) == epoch_order(1, 0)
    assert epoch_order(1, 1) != epoch_order(1, 0)
    assert epoch_order(2, 0) != epoch_order(1, 0)
    unshuffled = BatchLoader(images, labels, np.arange(30), batch_size=4, shuffle=False, seed=0)
    assert (torch.cat([y for _, y in unshuffled]) - 100).tolist() == list(range(30))


def test_batch_loader_drop_last_and_errors():
    images, labels = _loader_inputs()
    loader = BatchLoader(images, labels, np.arange(23), batch_size=5, shuffle=False, seed=0, drop_last=True)
    assert len(loader) == 4 and sum(len(y) for _, y in loader) == 20
    no_labels = BatchLoader(images, None, [0, 1], batch_size=8, shuffle=False, seed=0)
    assert next(iter(no_labels))[1].tolist() == [-1, -1]
    with pytest.raises(ValueError, match="indices"):
        BatchLoader(images, labels, [0, 30], batch_size=2, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(images, labels, [0], batch_size=0, shuffle=False, seed=0)


def test_batch_loader_reads_a_cache(tmp_path, layout_paths):
    built = build_cache(layout_paths, size=(16, 12), cache_dir=tmp_path / "c", progress=False)
    loader = BatchLoader(built.images, np.arange(28), np.arange(28), batch_size=8, shuffle=True, seed=3)
    for x, y in loader:
        assert torch.equal(x, torch.from_numpy(np.asarray(built.images[y.numpy()])))


class _FailingRows(np.ndarray):
    """An image array whose read of row 17 fails, like a file that vanished under a memmap."""

    def __getitem__(self, key):
        if isinstance(key, np.ndarray) and 17 in key:
            raise OSError("row 17 cannot be read")
        return super().__getitem__(key)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def test_batch_loader_prefetch_thread_serves_the_same_batches_and_stops():
    images, labels = _loader_inputs()
    plain = BatchLoader(images, labels, np.arange(30), batch_size=4, shuffle=True, seed=5)
    ahead = BatchLoader(images, labels, np.arange(30), batch_size=4, shuffle=True, seed=5, prefetch=2)
    assert plain.prefetch == 0 and ahead.prefetch == 2
    assert [y.tolist() for _, y in ahead] == [y.tolist() for _, y in plain]
    assert [x.tolist() for x, _ in ahead] == [x.tolist() for x, _ in plain]
    for i, _ in enumerate(ahead):  # the consumer stops early: the producer thread ends with it
        if i == 1:
            break
    assert _prefetch_threads() == []
    failing = BatchLoader(
        images.view(_FailingRows), labels, np.arange(30), batch_size=4, shuffle=False, seed=0, prefetch=2
    )
    served = []
    with pytest.raises(OSError, match="row 17"):
        for _, y in failing:
            served += y.tolist()
    assert served == [100 + i for i in range(16)]  # batches 0..3 arrive, batch 4 (rows 16..19) raises
    assert _prefetch_threads() == []
