"""One error hierarchy. Every message names the bad value and the fix."""
from __future__ import annotations


class ZooError(Exception):
    """Base of every error zoo raises on purpose; the CLI prints it as one line."""

    exit_code = 1


class ZooValueError(ZooError, ValueError):
    """An argument is out of range or malformed."""

    exit_code = 2


class NotFound(ZooError, LookupError):
    """A model, family, space or path that does not exist."""


class CheckpointError(ZooError):
    """A checkpoint that cannot be read: missing, truncated, corrupt, or unsafe."""


class UnsafeCheckpoint(CheckpointError):
    """A pickle that holds code or objects other than tensors."""


class BadWeights(CheckpointError):
    """Weights that hold NaN or Inf."""


class SourceChanged(ZooError):
    """A registered checkpoint's files moved, vanished or changed since registration."""


class FamilyMismatch(ZooError):
    """A checkpoint whose tensors do not fit the family it is compared with."""


class AmbiguousBase(ZooError):
    """Several bases fit a checkpoint and the weights do not single one out."""


class Conflict(ZooError):
    """An operation that would break the catalog's integrity (e.g. removing a parent)."""


class ReadOnlySQL(ZooError):
    """A statement given to the read-only SQL runner that would write."""


class ZooBusy(ZooError):
    """Another process holds the catalog for writing longer than the lock timeout."""


class WriteBackPending(ZooBusy):
    """A finished fine-tune whose registration found the catalog busy: kept, registered by the next command."""


class CatalogUnreadable(ZooError):
    """A catalog file that cannot be opened: corrupt, not DuckDB, or not readable/writable here."""


class CatalogVersionError(ZooError):
    """The catalog was written by a newer zoo than this one."""


class EmptyRegion(ZooError):
    """A region selection that matched no model."""


class IndexError_(ZooError):
    """A FAISS index that cannot be built or read."""
