"""Small file helpers shared by every stage: atomic, durable writes and content hashes."""
import contextlib
import hashlib
import json
import os
import tempfile

from .errors import SanetError


def current_umask():
    """The process umask, read without changing it where the OS allows (Linux /proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path, directory=False):
    """Flush ``path`` (a file, or a folder's entries) to disk; folders cannot be opened on Windows: skipped there."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some filesystems refuse fsync on folders; the file itself must reach the disk
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, verify=None):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block (and ``verify``) succeed.

    Readers never see a half-written or unverified artifact, and a failure, an exception or Ctrl-C leaves
    neither a partial file nor the temporary one. ``verify(tmp_path)`` runs on the finished temporary file
    before the rename and raises to reject it. The final file gets the mode a plain ``open()`` would give
    (0666 minus the umask, not mkstemp's 0600, so servers and other users can read it); the file and then its
    folder are fsynced, so after a power cut the name holds either the old or the complete new content.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    except OSError as exc:
        raise SanetError("cannot write to {}: {} (choose a writable output directory)".format(folder, exc.strerror)) from exc
    os.close(fd)
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(folder, directory=True)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path, data, verify=None):
    with atomic_path(path, verify) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text_atomic(path, text, verify=None):
    with atomic_path(path, verify) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def write_json_atomic(path, data):
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_writable_dir(folder):
    """Create ``folder`` if needed and check that files can be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SanetError("cannot create output directory {}: {}".format(folder, exc.strerror)) from exc
    if not os.access(folder, os.W_OK):
        raise SanetError("output directory {} is not writable: choose another with -o".format(folder))
    return folder
