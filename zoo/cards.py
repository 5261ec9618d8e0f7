"""What travels with a folder zoo writes: the base's support files, a model card, a recipe.

A materialized or trained model must load and make sense outside the zoo: it carries every
support file of its base (tokenizer, sentence-transformers modules, generation config), a
Hugging Face model card whose front matter names ``base_model`` and ``base_model_relation``
(merge / adapter / finetune), and for linear merges a mergekit recipe that remakes it
(zoo's linear average is mergekit's ``linear`` method). ``read_recipe`` is the way back:
``zoo add`` of a mergekit output records its inputs as lineage.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from zoo.files import model_files

CARD = "README.md"
RECIPE = "mergekit_config.yml"
# Files of a folder that describe that folder only, never copied from a base.
_OWN = {"config.json", CARD, RECIPE, "zoo-record.json", "adapter_config.json", "adapter_model.safetensors",
        "adapter_model.bin", "model.safetensors.index.json"}
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float32"}


def copy_support(src: Path | None, weights: Sequence[Path], dest: Path) -> list[str]:
    """Copy the base folder's support files (everything but weights and its own description)
    into ``dest``, keeping sub-folders (``1_Pooling/``); the relative paths copied."""
    if src is None or not src.is_dir():
        return []
    done = []
    for f in model_files(src, list(weights)):
        if f in weights or not f.is_relative_to(src):  # weights (maybe named through another mount) stay
            continue
        rel = f.relative_to(src)
        if str(rel) in _OWN or f.suffix in (".safetensors", ".bin") or (dest / rel).exists():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
        done.append(str(rel))
    return done


def ref_of(row: dict[str, Any]) -> str:
    """How a model is named outside this zoo: its Hub repo id when it came from the Hub, else its zoo name."""
    hub = (row.get("meta") or {}).get("hub") or {}
    return str(hub.get("repo_id") or row["name"])


def write_card(dest: Path, name: str, relation: str, bases: Sequence[str], lines: Sequence[str],
               library: str = "transformers", weights: Sequence[tuple[str, float]] = ()) -> None:
    """A model card: YAML front matter (``base_model``, ``base_model_relation``, library) and
    what zoo did, with the members and their weights for a merge."""
    import yaml

    front = {"base_model": list(bases) if len(bases) != 1 else bases[0], "base_model_relation": relation,
             "library_name": library, "tags": ["zoo", relation]}
    body = [f"# {name}", "", *lines]
    if weights:
        body += ["", "| model | weight |", "|---|---|", *(f"| {m} | {w:.6g} |" for m, w in weights)]
    (dest / CARD).write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n")


def write_recipe(dest: Path, members: Sequence[tuple[str, float]], dtype: str) -> None:
    """The mergekit recipe of a linear merge with these (model, weight) pairs (weights as used:
    ``normalize: false``)."""
    import yaml

    recipe = {"merge_method": "linear", "dtype": _DTYPES.get(dtype, "float32"),
              "parameters": {"normalize": False},
              "models": [{"model": m, "parameters": {"weight": float(w)}} for m, w in members]}
    (dest / RECIPE).write_text("# Written by zoo: `mergekit-yaml mergekit_config.yml OUT` makes the same model.\n"
                               + yaml.safe_dump(recipe, sort_keys=False))


def read_recipe(folder: Path) -> dict[str, Any] | None:
    """A mergekit output's recipe: method, whether weights are normalised, and (model, weight)
    pairs (weight None where it is not one number: gradients, per-layer lists); None without one."""
    import yaml

    path = folder / RECIPE if folder.is_dir() else folder.parent / RECIPE
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    method = str(doc.get("merge_method", "")) or None
    entries = doc.get("models") or []
    if not entries and isinstance(doc.get("slices"), list):  # slice recipes name models per slice
        entries = [s for sl in doc["slices"] if isinstance(sl, dict) for s in sl.get("sources") or []]
    models: list[tuple[str, float | None]] = []
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and e.get("model"):
            w = (e.get("parameters") or {}).get("weight") if isinstance(e.get("parameters"), dict) else None
            models.append((str(e["model"]), float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else None))
    params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    return {"method": method, "normalize": bool(params.get("normalize", True)), "models": models,
            "base_model": doc.get("base_model")}


def recipe_summary(recipe: dict[str, Any]) -> str:
    return json.dumps({"method": recipe["method"], "models": [m for m, _ in recipe["models"]]})
