"""Outputs that cannot be written: a read-only output folder and a full disk stop a stage
with one line naming the path and the fix; temporary files of a killed writer are removed."""

import errno
import os
import shutil
import subprocess
import sys

import pytest

from detflow.core.files import OutputError, atomic_dir, atomic_file, write_json
from detflow.data.clean import clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset

from conftest import REPO, run


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write to: chmod, and the immutable attribute for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr")
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=False, capture_output=True)
    try:
        (folder / "probe").touch()
    except OSError:
        yield folder
    else:
        (folder / "probe").unlink()
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False, capture_output=True)
        folder.chmod(0o755)


def _synthetic(tmp_path):
    source = {"format": "synthetic", "num_images": 4, "image_size": 32, "classes": ["circle"]}
    collect_dataset(options=CollectOptions(source={**source, "seed": 1}), out_dir=tmp_path / "raw")
    return tmp_path / "raw" / "dataset.json"


def test_read_only_output_folder_is_one_clear_line(tmp_path, read_only):
    raw = _synthetic(tmp_path)
    with pytest.raises(OutputError) as error:
        clean_dataset(in_json=raw, out_dir=read_only / "clean")
    message = str(error.value)
    assert message.startswith(f"{read_only / 'clean'}: cannot write (")
    assert "make the folder writable" in message and "\n" not in message
    with pytest.raises(OutputError, match=r"report\.json: cannot write"):
        write_json(read_only / "report.json", {"a": 1})


def test_stage_on_a_read_only_folder_exits_2_without_traceback(tmp_path, read_only):
    result = run(
        [
            sys.executable,
            "stages/collect.py",
            "data=synthetic",
            "data.num_images=2",
            f"hydra.run.dir={read_only}",
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
        ],
        REPO,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("detflow collect: error: ") and "cannot write" in lines[-1]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_disk_full_while_writing_is_one_clear_line_and_keeps_the_old_output(tmp_path, code):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(OutputError) as error, atomic_file(target) as tmp, open(tmp, "wb") as out:
        out.write(b"half")
        raise OSError(code, os.strerror(code))  # what write() raises on a full disk
    assert str(error.value).startswith(f"{target}: cannot write ({os.strerror(code)})")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    folder = tmp_path / "images"
    with pytest.raises(OutputError, match="free disk space"), atomic_dir(folder) as tmp:
        (tmp / "a.png").write_bytes(b"x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not folder.exists()


def test_other_errors_inside_a_write_block_are_not_disguised(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "x.json"):
        (tmp_path / "missing-input.json").read_text()  # reading an input, not writing


def test_temporary_siblings_of_a_killed_writer_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    stale_file = tmp_path / f".out.json.tmp-{pid}-abc"
    stale_dir = tmp_path / f".out.json.tmp-{pid}-def"
    alive = tmp_path / f".out.json.tmp-{os.getpid()}-ghi"  # a writer that still runs
    stale_file.write_text("half")
    stale_dir.mkdir()
    alive.write_text("busy")
    write_json(tmp_path / "out.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "out.json"]
