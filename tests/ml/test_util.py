"""maskcls_hpo._util: atomic writes (content, nothing left behind, racing writers) and the progress bar."""

from __future__ import annotations

import os
import threading

import pytest

from maskcls_hpo._util import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_path_name,
    path_under,
    progress_bar,
)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_text_writes_the_text_and_replaces_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old\n", encoding="utf-8")
    assert atomic_write_text(target, '{"best_f1": 0.5}\r\nä\n') == target
    assert target.read_bytes() == b'{"best_f1": 0.5}\r\n\xc3\xa4\n'  # utf-8, line ends as given
    assert names(tmp_path) == ["metrics.json"]  # no temporary file left


def test_atomic_write_bytes_creates_a_new_file_with_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "last.pt", b"\x00\x01\x02")
    finally:
        os.umask(old)
    assert (tmp_path / "last.pt").read_bytes() == b"\x00\x01\x02"
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o644  # as open(path, "w") would make it


def test_writing_below_a_file_fails_and_leaves_nothing(tmp_path):
    (tmp_path / "out").write_text("a file, not a folder", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        atomic_write_text(tmp_path / "out" / "config.yaml", "lr: 0.001\n")
    assert names(tmp_path) == ["out"]


def test_data_that_cannot_be_written_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, {"not": "bytes"})  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["best.pt"]


def test_a_writer_that_fails_half_way_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "val_predictions.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("path,person_id\nhalf", encoding="utf-8")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert names(tmp_path) == ["val_predictions.csv"]


def test_two_writers_racing_on_one_file_leave_one_complete_content(tmp_path):
    target = tmp_path / "model.pt"
    contents = {b"a" * 2_000_000, b"b" * 3_000_000}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        start.wait()
        try:
            for _ in range(20):
                atomic_write_bytes(target, data)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in contents  # 2 MB of "a" or 3 MB of "b", never a mix or a part
    assert names(tmp_path) == ["model.pt"]


def test_a_disabled_progress_bar_prints_nothing(capsys):
    with progress_bar(3, "epoch 1/2", enabled=False, show_loss=True) as advance:
        advance(0.5)
        advance()
    assert capsys.readouterr() == ("", "")


def test_the_progress_bar_counts_steps_on_stderr(capsys):
    with progress_bar(3, "caching 3 images at 64x48") as advance:
        for _ in range(3):
            advance()
    out, err = capsys.readouterr()
    assert out == ""
    assert "caching 3 images at 64x48" in err and "3/3" in err


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../escape", "holds a path separator"),
        ("a/b", "holds a path separator"),
        ("a\\b", "holds a path separator"),
        ("..", "holds '..'"),
        ("x..y", "holds '..'"),
        (".", "is '.'"),
        ("a\nb", "holds control characters"),
        ("a\x00b", "holds control characters"),
        ("a\x1b[31mb", "holds control characters"),
        ("", "is empty"),
        ("  ", "is empty"),
        ("é" * 101, "is longer than 200 bytes"),
    ],
)
def test_check_path_name_refuses_names_that_are_no_single_folder(name, why):
    with pytest.raises(ValueError) as err:
        check_path_name(name, "--study")
    assert str(err.value).startswith("--study ") and why in str(err.value)
    assert "\n" not in str(err.value)  # one line, control characters escaped


@pytest.mark.parametrize("name", ["smoke", "smoke-confirm", "v1.2_run", "résumé", "a" * 200])
def test_check_path_name_keeps_ordinary_names(name):
    assert check_path_name(name, "--study") == name


def test_path_under_refuses_a_path_that_resolves_outside_its_root(tmp_path):
    root = tmp_path / "logs"
    root.mkdir()
    assert path_under(root, "smoke") == root / "smoke"
    with pytest.raises(ValueError, match="outside"):
        path_under(root, "..", "escape")
    (root / "link").symlink_to(tmp_path.parent)  # a symbolic link inside the root pointing out of it
    with pytest.raises(ValueError, match="outside"):
        path_under(root, "link", "x")
    assert not (tmp_path / "escape").exists()


# --- issue 25: a full disk named, output paths and whole numbers checked ------------------------------------


def test_disk_full_reason_names_the_folder_of_the_failed_file(tmp_path):
    import errno

    from maskcls_hpo._util import disk_full_reason, free_bytes

    target = tmp_path / "trial_00000" / "best.pt"
    err = OSError(errno.ENOSPC, "No space left on device", str(target))
    wrapped = RuntimeError("saving the checkpoint failed")
    wrapped.__cause__ = err
    free = free_bytes(tmp_path) / 2**20
    assert disk_full_reason(wrapped, [tmp_path]) == f"disk-full: {target.parent} has {free:.1f} MiB free"
    # SQLite's words, no file named: the folder with the least free space of those given
    assert disk_full_reason(Exception("(sqlite3.OperationalError) database or disk is full"), [tmp_path]) == (
        f"disk-full: {tmp_path} has {free:.1f} MiB free"
    )
    # torch.save's "unexpected pos" is a full disk only where space is short (here it is not), other errors never
    assert (
        disk_full_reason(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"), [tmp_path])
        is None
    )
    assert disk_full_reason(ValueError("bad value"), [tmp_path]) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--out is empty; give a file name"),
        ("adir", "--out {tmp}/adir is a folder; give a file name (in it, or elsewhere)"),
        ("afile/x.csv", "--out {tmp}/afile/x.csv: {tmp}/afile is not a folder (a file); pick another --out"),
    ],
)
def test_check_output_file(tmp_path, value, message):
    from maskcls_hpo._util import check_output_file

    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    path = str(tmp_path / value) if value else value
    with pytest.raises(ValueError) as caught:
        check_output_file(path, "--out", ValueError)
    assert str(caught.value) == message.format(tmp=tmp_path)
    assert check_output_file(tmp_path / "new" / "out.csv", "--out", ValueError) == tmp_path / "new" / "out.csv"


def test_check_whole_number():
    from maskcls_hpo._util import check_whole_number

    assert check_whole_number(5, "--top", 1, 1000, ValueError) == 5
    for bad in (0, 1001, 10**20, True, 2.0):
        with pytest.raises(ValueError, match=r"^--top must be a whole number from 1 to 1000, got "):
            check_whole_number(bad, "--top", 1, 1000, ValueError)  # type: ignore[arg-type]
