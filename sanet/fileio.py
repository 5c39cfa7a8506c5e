"""Small file helpers shared by every stage: atomic writes and content hashes."""
import contextlib
import hashlib
import json
import os
import tempfile

from .errors import SanetError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written artifact, and a failure (or Ctrl-C) leaves no partial file.
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
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
