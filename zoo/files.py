"""Folders zoo writes appear whole: built under a hidden temporary name beside the target,
renamed into place when complete, removed on any failure."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from zoo.errors import Conflict


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out_dir`` when the block succeeds.

    The folder gets the permissions a plain ``mkdir`` would (``mkdtemp`` makes it
    owner-only), so a shared zoo's checkpoints are readable by the group as usual.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise Conflict(f"output folder {out_dir} already exists; choose another --out name or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock file for the block; a second holder is refused at once.

    The lock dies with its process (``flock``), so what a killed process left behind can be
    told from what a live one is still writing.
    """
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(f"another zoo process is writing {what} right now; wait for it or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder unlinked this file as we locked it: lock the current one
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # still held here; the next writer creates a fresh file
        os.close(fd)


# Files of a training run that are not part of the model: never brought into the store.
TRAINING_STATE = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "training_args.bin",
                  "trainer_state.json")
# Support files (configs, tokenizers, model cards) above this size are not the model's either.
SUPPORT_MAX = 64 << 20


def model_files(path: Path, weights: list[Path]) -> list[Path]:
    """The files that make up a checkpoint at ``path``: its weight files, and for a folder its
    small support files and sentence-transformers module folders (``1_Pooling/``...), not the
    training state or sub-checkpoints beside them."""
    files = list(weights)
    if not path.is_dir():
        cfg = path.parent / "config.json"
        return files + ([cfg] if cfg.is_file() else [])
    for f in sorted(path.iterdir()):
        if f.is_file() and f not in files and not f.name.startswith(".") and f.name not in TRAINING_STATE \
                and not f.name.startswith("rng_state") and f.stat().st_size <= SUPPORT_MAX:
            files.append(f)
        elif f.is_dir() and f.name[:1].isdigit() and "_" in f.name:
            files += [g for g in sorted(f.rglob("*")) if g.is_file() and g.stat().st_size <= SUPPORT_MAX]
    return files


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` at ``dst`` (same filesystem), else copy it; True when linked. A
    symlink (the Hugging Face cache is made of them) is followed: Linux's link() would link
    the symlink itself, dangling once it sits elsewhere."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(os.path.realpath(src), dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


def crash_point(name: str) -> None:
    """A named point where a test may kill this process (``ZOO_CRASH_AT=name``), as ``kill -9``
    would: the soak tests prove that no such point loses work or leaves a partial row."""
    if os.environ.get("ZOO_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
