"""Build labelled text datasets from Debian packages (fortunes, WordNet), independent of zoo.

Recipe (all of it is here; `make datasets` runs it):
1. `apt-get download PKG` for each package into CACHE/debs (no root needed), then
   `dpkg-deb -x` each into CACHE/pkgs/PKG. A package that cannot be downloaded stops the
   build with its name and how to get it; nothing is written.
2. Parse: fortune files are entries separated by lines holding `%`; WordNet `data.*`
   files are synset lines `offset lex_filenum pos w_cnt word lex_id ... p_cnt ptr... | gloss`.
3. Build three tasks with three or more datasets each (jsonl, `text`, optional
   `text_pair`, `label`), split deterministically by a hash of the example (80/10/10),
   capped per label for balance, written to a temporary folder and renamed into OUT
   only when every dataset is complete. OUT/PROVENANCE.md lists each dataset's packages,
   versions and licences (from the packages' copyright files).

Tasks:
- topic: `fortune-topics` (English fortune category), `wordnet-domains` (noun gloss ->
  topic domain), `wordnet-lexnames` (noun gloss -> lexicographer category);
- langid: `langid-short`, `langid-medium`, `langid-long` (de, es, it, pl, ru, cs, pt
  fortunes by length: the same languages drawn from different kinds of text);
- relation (pairs): `wn-noun-relations`, `wn-verb-relations`, `wn-adj-relations`
  (synonym / antonym / hypernym / part / entailment / similar / unrelated, as each
  part of speech has them) and `wn-gloss-match` (word + gloss: matched or not).

    python scripts/build_datasets.py [--out data/real] [--cache ~/.cache/zoo-datasets] [--max-train 2000]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

LANG_PACKAGES = {"de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it", "pl": "fortunes-pl",
                 "ru": "fortunes-ru", "cs": "fortunes-cs", "pt": "fortunes-br"}
EN_PACKAGE = "fortunes"
WORDNET = "wordnet-base"
FORTUNE_TOPICS = ["computers", "definitions", "education", "food", "law", "love", "medicine", "people", "politics",
                  "science", "sports", "work"]
LEXNAMES = ["adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
            "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
            "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
            "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
            "noun.substance", "noun.time"]
TASKS = {"fortune-topics": "topic", "wordnet-domains": "topic", "wordnet-lexnames": "topic",
         "langid-short": "langid", "langid-medium": "langid", "langid-long": "langid",
         "wn-noun-relations": "relation", "wn-verb-relations": "relation", "wn-adj-relations": "relation",
         "wn-gloss-match": "relation"}


class BuildError(Exception):
    """A build step failed; the message says which input and how to fix it."""


# ---------------------------------------------------------------- packages

def fetch(packages: Iterable[str], cache: Path) -> dict[str, Path]:
    """Download and unpack each package (cached); {package: unpacked root}."""
    debs, roots = cache / "debs", cache / "pkgs"
    debs.mkdir(parents=True, exist_ok=True)
    roots.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in packages:
        root = roots / pkg
        if not (root / ".complete").exists():
            found = sorted(debs.glob(f"{pkg}_*.deb"))
            if not found:
                try:
                    r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True, timeout=600)
                except (OSError, subprocess.TimeoutExpired) as e:
                    raise BuildError(f"cannot download Debian package {pkg!r} ({e}); run `apt-get update && apt-get "
                                     f"download {pkg}` and put the .deb in {debs}") from e
                found = sorted(debs.glob(f"{pkg}_*.deb"))
                if r.returncode != 0 or not found:
                    why = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no .deb appeared"]
                    raise BuildError(f"cannot download Debian package {pkg!r} ({why[0]}); run `apt-get update && "
                                     f"apt-get download {pkg}` and put the .deb in {debs}")
            shutil.rmtree(root, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(dir=roots, prefix=f".{pkg}."))
            r = subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(tmp)], capture_output=True, text=True)
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise BuildError(f"cannot unpack {found[-1]} ({r.stderr.strip()}); delete it and run again")
            (tmp / ".complete").write_text(found[-1].name)
            os.replace(tmp, root)
        out[pkg] = root
    return out


def package_info(root: Path, pkg: str) -> dict[str, str]:
    """Version (from the .deb name) and the licences named in the package's copyright file."""
    deb = (root / ".complete").read_text().strip()
    version = deb.split("_")[1].replace("%3a", ":") if "_" in deb else "?"
    cp = root / "usr" / "share" / "doc" / pkg / "copyright"
    lic = []
    if cp.is_file():
        text = cp.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("License:") and line[8:].strip() and line[8:].strip() not in lic:
                lic.append(line[8:].strip())
        if not lic:  # an old-style copyright file: name the licences it mentions
            lic = [f"mentions {k}" for k in ("BSD", "GPL", "public domain", "Artistic") if k.lower() in text.lower()]
    return {"package": pkg, "version": version, "licence": ", ".join(lic) or "see /usr/share/doc/%s/copyright" % pkg}


# ---------------------------------------------------------------- parsing

def parse_fortunes(text: str) -> list[str]:
    """Entries of a fortune file (separated by lines holding only %), whitespace-normalised."""
    out = []
    for chunk in re.split(r"^%\s*$", text, flags=re.M):
        entry = " ".join(chunk.split())
        if entry:
            out.append(entry)
    return out


def fortune_files(root: Path) -> list[Path]:
    """Fortune text files a package ships: no .dat indexes, no links, no offensive (off/) sets."""
    base = root / "usr" / "share" / "games"
    if not base.is_dir():
        return []
    files = []
    for p in sorted(base.rglob("*")):
        if p.is_symlink() or not p.is_file() or p.suffix in (".dat", ".u8") or "off" in p.relative_to(base).parts:
            continue
        files.append(p)
    return files


def read_text(p: Path) -> str:
    raw = p.read_bytes()
    for enc in ("utf-8", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


class Synset:
    __slots__ = ("offset", "lexfile", "pos", "words", "pointers", "gloss")

    def __init__(self, offset: str, lexfile: int, pos: str, words: list[str], pointers: list[tuple], gloss: str):
        self.offset, self.lexfile, self.pos, self.words, self.pointers, self.gloss = offset, lexfile, pos, words, pointers, gloss


def parse_wordnet_data(text: str) -> dict[str, Synset]:
    """Synsets of a WordNet data.* file by offset (license header lines start with spaces)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith(" "):
            continue
        body, _, gloss = line.partition(" | ")
        f = body.split()
        offset, lexfile, pos, wcnt = f[0], int(f[1]), f[2], int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(wcnt)]
        i = 4 + 2 * wcnt
        pcnt = int(f[i])
        ptrs = []
        for j in range(pcnt):
            sym, off, ppos, st = f[i + 1 + 4 * j: i + 5 + 4 * j]
            ptrs.append((sym, off, ppos, int(st[:2], 16), int(st[2:], 16)))
        gloss = gloss.strip().split(";")[0].strip().strip('"').strip()
        out[offset] = Synset(offset, lexfile, pos, words, ptrs, gloss)
    return out


# ---------------------------------------------------------------- datasets

def _key(ex: dict) -> str:
    return hashlib.sha1(json.dumps(ex, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def split_and_cap(examples: list[dict], max_train: int, seed: int = 0) -> dict[str, list[dict]]:
    """80/10/10 by a hash of each example; then balanced caps per label (dev/test a quarter of train)."""
    seen, uniq = set(), []
    for ex in examples:
        k = _key(ex)
        if k not in seen:
            seen.add(k)
            uniq.append((k, ex))
    splits: dict[str, list[tuple[str, dict]]] = {"train": [], "dev": [], "test": []}
    for k, ex in sorted(uniq):
        b = int(k[:8], 16) % 10
        splits["train" if b < 8 else "dev" if b == 8 else "test"].append((k, ex))
    labels = sorted({ex["label"] for _, ex in uniq})
    out = {}
    for name, rows in splits.items():
        cap = max_train if name == "train" else max(1, max_train // 4)
        per = max(1, cap // max(1, len(labels)))
        by: dict[str, list[dict]] = defaultdict(list)
        for _, ex in rows:
            if len(by[ex["label"]]) < per:
                by[ex["label"]].append(ex)
        chosen = [ex for lab in labels for ex in by[lab]]
        random.Random(f"{seed}-{name}").shuffle(chosen)
        out[name] = chosen
    return out


def topic_fortunes(root: Path) -> list[dict]:
    base = root / "usr" / "share" / "games" / "fortunes"
    rows = []
    for topic in FORTUNE_TOPICS:
        p = base / topic
        if p.is_file():
            rows += [{"text": t, "label": topic} for t in parse_fortunes(read_text(p)) if 20 <= len(t) <= 600]
    return rows


def langid(roots: dict[str, Path]) -> dict[str, list[dict]]:
    buckets: dict[str, list[dict]] = {"langid-short": [], "langid-medium": [], "langid-long": []}
    for lang, pkg in LANG_PACKAGES.items():
        for f in fortune_files(roots[pkg]):
            for t in parse_fortunes(read_text(f)):
                n = len(t)
                if n < 20 or n > 1000:
                    continue
                name = "langid-short" if n < 80 else "langid-medium" if n < 200 else "langid-long"
                buckets[name].append({"text": t, "label": lang})
    return buckets


def wordnet_sets(data: dict[str, dict[str, Synset]], seed: int = 0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    nouns = data["noun"]
    out: dict[str, list[dict]] = {}
    # topic: noun gloss -> topic domain (;c), the 12 most frequent domains
    dom = [(s.gloss, nouns[o].words[0]) for s in nouns.values() for (sym, o, p, _, _) in s.pointers
           if sym == ";c" and p == "n" and o in nouns and s.gloss]
    top = {d for d, _ in sorted(((d, sum(1 for _, x in dom if x == d)) for d in {x for _, x in dom}),
                                key=lambda kv: (-kv[1], kv[0]))[:12]}
    out["wordnet-domains"] = [{"text": g, "label": d} for g, d in dom if d in top]
    # topic: noun gloss -> lexicographer file, the 10 most frequent categories
    lex = [(s.gloss, LEXNAMES[s.lexfile]) for s in nouns.values() if s.gloss and 3 < s.lexfile < len(LEXNAMES)]
    counts = defaultdict(int)
    for _, l in lex:
        counts[l] += 1
    keep = set(sorted(counts, key=lambda l: (-counts[l], l))[:10])
    out["wordnet-lexnames"] = [{"text": g, "label": l} for g, l in lex if l in keep]
    # relations per part of speech
    rel_names = {"n": {"@": "hypernym", "%p": "part"}, "v": {"@": "hypernym", "*": "entailment"},
                 "a": {"&": "similar"}}
    for pos, fname in (("n", "noun"), ("v", "verb"), ("a", "adj")):
        syn = data[fname]
        rows = []
        vocab = [w for s in syn.values() for w in s.words]
        for s in syn.values():
            if len(s.words) > 1:
                rows.append({"text": s.words[0], "text_pair": s.words[1], "label": "synonym"})
            for sym, o, p, src, tgt in s.pointers:
                if o not in syn or p[0] != pos[0] and not (pos == "a" and p == "s"):
                    continue
                other = syn[o]
                if sym == "!" and src and tgt and src <= len(s.words) and tgt <= len(other.words):
                    rows.append({"text": s.words[src - 1], "text_pair": other.words[tgt - 1], "label": "antonym"})
                elif sym in rel_names[pos]:
                    rows.append({"text": s.words[0], "text_pair": other.words[0], "label": rel_names[pos][sym]})
        n_un = max(1, len(rows) // max(1, len({r["label"] for r in rows})))
        for _ in range(n_un):
            rows.append({"text": rng.choice(vocab), "text_pair": rng.choice(vocab), "label": "unrelated"})
        out[f"wn-{fname}-relations"] = rows
    # word + gloss: matched or not
    glossed = [(s.words[0], s.gloss) for s in nouns.values() if s.gloss]
    rows = []
    for i, (w, g) in enumerate(glossed):
        if i % 2:
            rows.append({"text": w, "text_pair": g, "label": "matched"})
        else:
            rows.append({"text": w, "text_pair": glossed[rng.randrange(len(glossed))][1], "label": "mismatched"})
    out["wn-gloss-match"] = rows
    return out


def build(out: Path, cache: Path, max_train: int) -> dict[str, dict[str, int]]:
    """Fetch, parse and write every dataset; OUT appears complete or not at all."""
    packages = [EN_PACKAGE, WORDNET, *LANG_PACKAGES.values()]
    roots = fetch(packages, cache)
    infos = {p: package_info(roots[p], p) for p in packages}
    wn_dir = roots[WORDNET] / "usr" / "share" / "wordnet"
    if not (wn_dir / "data.noun").is_file():
        raise BuildError(f"{WORDNET} unpacked without {wn_dir / 'data.noun'}; delete {roots[WORDNET]} and run again")
    wn = {f: parse_wordnet_data(read_text(wn_dir / f"data.{f}")) for f in ("noun", "verb", "adj")}
    sets: dict[str, tuple[list[dict], list[str]]] = {"fortune-topics": (topic_fortunes(roots[EN_PACKAGE]), [EN_PACKAGE])}
    for name, rows in langid(roots).items():
        sets[name] = (rows, list(LANG_PACKAGES.values()))
    for name, rows in wordnet_sets(wn).items():
        sets[name] = (rows, [WORDNET])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    summary: dict[str, dict[str, int]] = {}
    prov = ["# Datasets built from Debian packages", "",
            "Built by `scripts/build_datasets.py` (`make datasets`); splits are deterministic (hash of each example).", "",
            "| dataset | task | labels | train / dev / test | packages (version; licence) |", "|---|---|---|---|---|"]
    try:
        for name, (rows, pkgs) in sets.items():
            if len({r["label"] for r in rows}) < 2:
                raise BuildError(f"dataset {name} came out with fewer than two labels from {', '.join(pkgs)}; "
                                 "the package layout may have changed")
            parts = split_and_cap(rows, max_train)
            d = tmp / name
            d.mkdir()
            for split, exs in parts.items():
                (d / f"{split}.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in exs))
            summary[name] = {k: len(v) for k, v in parts.items()}
            labels = sorted({r["label"] for r in parts["train"]})
            src = "; ".join(f"{infos[p]['package']} {infos[p]['version']} ({infos[p]['licence']})" for p in pkgs)
            prov.append(f"| {name} | {TASKS[name]} | {len(labels)}: {', '.join(labels[:12])} | "
                        f"{summary[name]['train']} / {summary[name]['dev']} / {summary[name]['test']} | {src} |")
        (tmp / "PROVENANCE.md").write_text("\n".join(prov) + "\n")
        (tmp / "datasets.json").write_text(json.dumps({n: {"task": TASKS[n], **summary[n]} for n in summary}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/real")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "zoo-datasets"))
    ap.add_argument("--max-train", type=int, default=2000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        summary = build(Path(args.out), Path(args.cache), args.max_train)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, s in summary.items():
        print(f"{name:>20} ({TASKS[name]}): train {s['train']}, dev {s['dev']}, test {s['test']}")
    # The build's wall time, for the reproduction report (downloads come from the cache when present).
    (Path(args.out) / "build.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
