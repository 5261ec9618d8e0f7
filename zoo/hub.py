"""The Hugging Face cache, offline: repo ids, cache folders and snapshot folders as checkpoints.

``zoo add org/name[@revision]`` resolves the local cache with huggingface_hub
(``snapshot_download(..., local_files_only=True)``: never a download, the machine may be
offline); a cache folder (``models--org--name``) or one of its ``snapshots/<commit>``
folders is accepted as a path too. Either way the repo id and the commit are known, and
recorded with the model (``meta.hub``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import NotFound, ZooValueError

REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")


@dataclass
class HubRef:
    """A model repository's snapshot in the local cache."""

    repo_id: str
    revision: str  # the commit hash
    path: Path  # the snapshot folder

    @property
    def name(self) -> str:
        """The default model name: the repository's name (``org/name`` -> ``name``)."""
        return self.repo_id.split("/")[-1]

    def as_meta(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "revision": self.revision}


def cache_dir() -> Path:
    """huggingface_hub's cache (``HF_HUB_CACHE``, ``HF_HOME``/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def _repo_of(folder_name: str) -> str | None:
    """``models--org--name`` -> ``org/name``; None for other folders (datasets, spaces, ...)."""
    if not folder_name.startswith("models--"):
        return None
    return folder_name[len("models--"):].replace("--", "/")


def from_path(p: Path) -> HubRef | None:
    """A cache folder (its ``refs/main`` snapshot, or its only one) or a snapshot folder (or a
    file in one) as a ``HubRef``; None for a path outside the cache's layout."""
    p = p.expanduser().absolute()
    if _repo_of(p.name) and (p / "snapshots").is_dir():
        return resolve_repo(_repo_of(p.name), None, p.parent)
    for q in (p, *p.parents):
        if q.parent.name == "snapshots" and _repo_of(q.parent.parent.name):
            return HubRef(_repo_of(q.parent.parent.name), q.name, q if p.is_dir() else p)
    return None


def resolve_repo(repo_id: str, revision: str | None = None, cache: Path | None = None) -> HubRef:
    """The snapshot of ``repo_id`` at ``revision`` (a branch, tag or commit; default ``main``,
    or the only snapshot) in the local cache; ``NotFound`` naming the fix when it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = cache or cache_dir()
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    if not folder.is_dir():
        raise NotFound(f"{repo_id} is not in the Hugging Face cache at {cache} (zoo never downloads); fetch it with "
                       f"`huggingface-cli download {repo_id}` or give its folder")
    if revision is None and not (folder / "refs" / "main").exists():
        snaps = sorted(s.name for s in (folder / "snapshots").iterdir() if s.is_dir()) if (folder / "snapshots").is_dir() else []
        if len(snaps) != 1:
            raise ZooValueError(f"{repo_id} has {len(snaps)} cached snapshots and no main ref; name one: "
                                f"{repo_id}@<revision> ({', '.join(s[:10] for s in snaps) or 'none'})")
        revision = snaps[0]
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=True))
    except LocalEntryNotFoundError:
        raise NotFound(f"{repo_id}@{revision or 'main'} is not in the Hugging Face cache at {cache} (zoo never "
                       f"downloads); fetch it with `huggingface-cli download {repo_id} --revision {revision or 'main'}`")
    return HubRef(repo_id, path.name, path)


def resolve(arg: str) -> HubRef | None:
    """What ``zoo add ARG`` means when ARG is Hub-shaped: an existing cache or snapshot
    folder, or a repo id (``org/name[@revision]``) that is not a local path; else None."""
    p = Path(arg).expanduser()
    if p.exists():
        return from_path(p)
    m = REPO_ID.match(arg)
    if m is None:
        return None
    try:
        return resolve_repo(m["repo"], m["rev"])
    except NotFound as e:  # a mistyped relative path looks like a repo id too
        raise NotFound(f"no file or folder {arg!r}, and {e}") from None


def scan(cache: Path | None = None) -> list[HubRef]:
    """Every model repository of the cache at its ``main`` ref (or its only snapshot);
    repositories with several snapshots and no ``main`` are skipped (their choice is the
    user's)."""
    from huggingface_hub import scan_cache_dir

    cache = cache or cache_dir()
    if not cache.is_dir():
        raise NotFound(f"no Hugging Face cache at {cache}; set HF_HUB_CACHE or HF_HOME")
    out = []
    for repo in sorted(scan_cache_dir(cache).repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        revs = list(repo.revisions)
        main = [r for r in revs if "main" in r.refs]
        pick = main[0] if main else revs[0] if len(revs) == 1 else None
        if pick is not None:
            out.append(HubRef(repo.repo_id, pick.commit_hash, Path(pick.snapshot_path)))
    return out
