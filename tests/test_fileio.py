"""Atomic writes: the umask decides the mode, verification runs before the rename, failures leave nothing."""
import os
import stat

import pytest

from sanet.errors import SanetError
from sanet.fileio import atomic_path, current_umask, write_bytes_atomic, write_json_atomic, write_text_atomic


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith(".tmp-"))


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_final_mode_follows_the_umask_like_open(umask, tmp_path, mask, expected):
    umask(mask)
    assert current_umask() == mask
    write_bytes_atomic(tmp_path / "artifact.bin", b"payload")
    with open(tmp_path / "plain.bin", "wb") as handle:
        handle.write(b"payload")
    mode = stat.S_IMODE(os.stat(tmp_path / "artifact.bin").st_mode)
    assert mode == expected == stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)


def test_verify_sees_the_finished_temporary_file_before_the_final_name(tmp_path):
    target = tmp_path / "model.onnx"
    seen = []

    def verify(tmp):
        seen.append((os.path.basename(tmp), open(tmp, "rb").read(), target.exists()))

    write_bytes_atomic(target, b"complete", verify=verify)
    assert len(seen) == 1 and seen[0][0].startswith(".tmp-") and seen[0][1:] == (b"complete", False)
    assert target.read_bytes() == b"complete" and leftovers(tmp_path) == []


def test_failing_verify_leaves_nothing_and_keeps_the_old_file(tmp_path):
    def reject(tmp):
        raise SanetError("parity check failed")

    fresh = tmp_path / "fresh.onnx"
    with pytest.raises(SanetError, match="parity check failed"):
        write_bytes_atomic(fresh, b"unverified", verify=reject)
    assert not fresh.exists() and leftovers(tmp_path) == []
    old = tmp_path / "old.json"
    write_json_atomic(old, {"a": 1})
    with pytest.raises(SanetError):
        write_text_atomic(old, "unverified", verify=reject)
    assert old.read_text() == '{\n  "a": 1\n}\n' and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("crash"), KeyboardInterrupt()])
def test_exception_or_ctrl_c_inside_leaves_no_temporary_file(tmp_path, error):
    target = tmp_path / "sub" / "plan.engine"
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half an engine")
            raise error
    assert not target.exists() and leftovers(tmp_path / "sub") == []


def test_positional_form_still_works_and_replaces(tmp_path):
    target = tmp_path / "report.txt"
    for text in ("first", "second"):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as handle:
                handle.write(text)
    assert target.read_text() == "second" and leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_is_a_one_line_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SanetError, match="cannot write to .*choose a writable output directory"):
            write_bytes_atomic(locked / "x.bin", b"x")
    finally:
        locked.chmod(0o700)
