"""Reading labelled text datasets (csv / jsonl / parquet) through DuckDB."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from zoo.errors import NotFound, ZooValueError

_READERS = {".csv": "read_csv_auto", ".tsv": "read_csv_auto", ".jsonl": "read_json_auto", ".json": "read_json_auto",
            ".ndjson": "read_json_auto", ".parquet": "read_parquet"}


@dataclass
class Examples:
    """Texts (and optional second texts) with their labels as strings; ``labels`` is None for
    plain text (a ``text`` column only: next-token training of a decoder)."""

    path: str
    text: list[str]
    text_pair: list[str] | None
    labels: list[str] | None

    def __len__(self) -> int:
        return len(self.text)

    def label_space(self) -> list[str]:
        """Sorted distinct labels; numeric labels sort as numbers."""
        if self.labels is None:
            raise ZooValueError(f"{self.path}: no 'label' column; this needs labelled data (text, label)")
        uniq = set(self.labels)
        try:
            return sorted(uniq, key=lambda x: (float(x), x))
        except ValueError:
            return sorted(uniq)

    def subset(self, idx: Sequence[int]) -> "Examples":
        return Examples(self.path, [self.text[i] for i in idx],
                        None if self.text_pair is None else [self.text_pair[i] for i in idx],
                        None if self.labels is None else [self.labels[i] for i in idx])


def read_examples(path: str | Path) -> Examples:
    """Read ``text``, optional ``text_pair`` and ``label`` columns; labels may be strings or ints.
    Without a ``label`` column the file is plain text (labels None)."""
    import duckdb

    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFound(f"data file {str(p)!r} does not exist")
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise ZooValueError(f"{p}: unknown data format {p.suffix!r}; use .csv, .jsonl or .parquet")
    con = duckdb.connect()
    try:
        rel = con.execute(f"SELECT * FROM {reader}($p)", {"p": str(p)})
        cols = [d[0] for d in rel.description]
        rows = rel.fetchall()
    except duckdb.Error as e:
        raise ZooValueError(f"{p}: cannot read as {p.suffix} ({str(e).splitlines()[0]})") from e
    finally:
        con.close()
    if "text" not in cols:
        raise ZooValueError(f"{p}: missing column text; found {', '.join(cols)}. Data needs 'text', optional "
                            "'text_pair', and 'label' (without 'label': plain text for a decoder)")
    if not rows:
        raise ZooValueError(f"{p}: no examples")
    ti = cols.index("text")
    li = cols.index("label") if "label" in cols else None
    pi = cols.index("text_pair") if "text_pair" in cols else None
    bad = [i for i, r in enumerate(rows) if r[ti] is None or (li is not None and r[li] is None)]
    if bad:
        raise ZooValueError(f"{p}: {len(bad)} row(s) with an empty text or label (first at row {bad[0] + 1})")
    return Examples(str(p), [str(r[ti]) for r in rows],
                    None if pi is None else [("" if r[pi] is None else str(r[pi])) for r in rows],
                    None if li is None else [_label(r[li]) for r in rows])


def _label(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
