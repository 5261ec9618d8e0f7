"""The Debian dataset builder, on synthetic unpacked packages (no download in tests)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("build_datasets", Path(__file__).parent.parent / "scripts" / "build_datasets.py")
bd = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bd)


def _pkg(cache: Path, name: str, files: dict[str, str]) -> None:
    root = cache / "pkgs" / name
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (root / ".complete").write_text(f"{name}_1.0-1_all.deb")
    doc = root / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text("License: GPL-2+\n")


def _fortunes(prefix: str, n: int, repeat: int = 1) -> str:
    pad = " and then some more words to make it long enough" * repeat
    return "\n%\n".join(f"{prefix} saying number {i}{pad}" for i in range(n)) + "\n%\n"


WN_NOUN = """  1 This software and database is being provided to you, the LICENSEE
00000001 05 n 02 dog 0 domestic_dog 0 003 @ 00000002 n 0000 %p 00000003 n 0000 ;c 00000004 n 0000 | a member of the genus Canis; "the dog barked"
00000002 05 n 01 canine 0 001 ~ 00000001 n 0000 | a carnivore of the family Canidae
00000003 08 n 01 tail 0 000 | the posterior part of an animal
00000004 09 n 01 zoology 0 000 | the study of animals
00000005 06 n 02 car 0 auto 0 002 ! 00000006 n 0101 ;c 00000007 n 0000 | a motor vehicle with four wheels
00000006 06 n 01 bicycle 0 000 | a two-wheeled vehicle
00000007 09 n 01 transport 0 000 | the study of moving things
"""
WN_VERB = """00000010 29 v 02 run 0 sprint 0 002 @ 00000011 v 0000 * 00000012 v 0000 | move fast
00000011 29 v 01 move 0 001 ! 00000013 v 0101 | change position
00000012 29 v 01 breathe 0 000 | draw air
00000013 29 v 01 stay 0 000 | remain in place
"""
WN_ADJ = """00000020 00 a 02 good 0 fine 0 002 ! 00000021 a 0101 & 00000022 s 0000 | having desirable qualities
00000021 00 a 01 bad 0 000 | having undesirable qualities
00000022 00 s 01 nice 0 000 | pleasant
"""


@pytest.fixture()
def cache(tmp_path):
    c = tmp_path / "cache"
    _pkg(c, "fortunes", {f"usr/share/games/fortunes/{t}": _fortunes(t, 30) for t in ("computers", "food", "law")}
         | {"usr/share/games/fortunes/off/law": _fortunes("rude", 5)})
    for lang, pkg in bd.LANG_PACKAGES.items():
        _pkg(c, pkg, {f"usr/share/games/fortunes/{lang}/misc": _fortunes(f"{lang} s", 20) + _fortunes(f"{lang} m", 10, 3) + _fortunes(f"{lang} l", 10, 6),
                      f"usr/share/games/fortunes/{lang}/misc.dat": "binary index"})
    _pkg(c, "wordnet-base", {"usr/share/wordnet/data.noun": WN_NOUN, "usr/share/wordnet/data.verb": WN_VERB,
                             "usr/share/wordnet/data.adj": WN_ADJ})
    return c


def test_parsers():
    assert bd.parse_fortunes("one\n  line\n%\n\n%\ntwo\n%\n") == ["one line", "two"]
    syn = bd.parse_wordnet_data(WN_NOUN)
    dog = syn["00000001"]
    assert dog.words == ["dog", "domestic dog"] and dog.lexfile == 5 and dog.gloss == "a member of the genus Canis"
    assert ("@", "00000002", "n", 0, 0) in dog.pointers and ("!", "00000006", "n", 1, 1) in syn["00000005"].pointers


def test_build_writes_every_dataset_with_provenance(cache, tmp_path):
    out = tmp_path / "out"
    summary = bd.build(out, cache, max_train=50)
    assert set(summary) == set(bd.TASKS)
    tasks = {}
    for name, task in bd.TASKS.items():
        tasks.setdefault(task, []).append(name)
        rows = [json.loads(l) for l in (out / name / "train.jsonl").read_text().splitlines()]
        assert rows and all("text" in r and "label" in r for r in rows)
    assert all(len(v) >= 3 for v in tasks.values())
    rel = [json.loads(l) for split in ("train", "dev", "test") for l in (out / "wn-noun-relations" / f"{split}.jsonl").read_text().splitlines()]
    assert {"text": "car", "text_pair": "bicycle", "label": "antonym"} in rel
    assert {"text": "dog", "text_pair": "domestic dog", "label": "synonym"} in rel
    topics = {json.loads(l)["label"] for s in ("train", "dev", "test") for l in (out / "fortune-topics" / f"{s}.jsonl").read_text().splitlines()}
    assert topics == {"computers", "food", "law"}
    assert "rude" not in (out / "fortune-topics" / "train.jsonl").read_text()  # off/ (offensive) sets excluded
    prov = (out / "PROVENANCE.md").read_text()
    assert "wordnet-base 1.0-1 (GPL-2+)" in prov and "| langid-short | langid |" in prov
    # Deterministic: a second build gives the same files.
    out2 = tmp_path / "out2"
    bd.build(out2, cache, max_train=50)
    assert (out / "langid-long" / "test.jsonl").read_text() == (out2 / "langid-long" / "test.jsonl").read_text()


def test_failure_writes_nothing(cache, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def boom(*a, **k):
        raise bd.BuildError("parser exploded")

    monkeypatch.setattr(bd, "wordnet_sets", boom)
    with pytest.raises(bd.BuildError):
        bd.build(out, cache, max_train=50)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no apt-get on PATH: the download cannot run
    with pytest.raises(bd.BuildError, match="'fortunes-xx'.*apt-get download fortunes-xx"):
        bd.fetch(["fortunes-xx"], tmp_path / "cache")


def test_reproduce_refuses_unknown_regions_and_settings(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "scripts" / "reproduce.py"
    for flag, bad, want in (("--regions", "on,middle", "choose on, off or both"),
                            ("--settings", "few-shot,half", "choose few-shot, full or both"),
                            ("--judge-seeds", "0", "1 or more")):
        r = subprocess.run([sys.executable, str(script), "--home", str(tmp_path / "none"), flag, bad],
                           capture_output=True, text=True)
        assert r.returncode == 1 and want in r.stderr and bad in r.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_real_zoo_script_is_resumable(tmp_path, ckpts):
    """scripts/real_zoo.py fine-tunes every dataset x seed through the CLI and skips what exists."""
    import subprocess
    import sys

    from conftest import write_sentiment
    from zoo import Zoo

    data = tmp_path / "data"
    for name in ("senti-a", "senti-b"):
        (data / name).mkdir(parents=True)
        write_sentiment(data / name / "train.jsonl", 16, seed=1)
        write_sentiment(data / name / "dev.jsonl", 8, seed=2)
    (data / "datasets.json").write_text(json.dumps({n: {"task": "sentiment", "train": 16, "dev": 8, "test": 0}
                                                    for n in ("senti-a", "senti-b")}))
    home = tmp_path / "zoo"
    script = Path(__file__).parent.parent / "scripts" / "real_zoo.py"
    cmd = [sys.executable, str(script), "--data", str(data), "--home", str(home), "--base", str(ckpts["base"]),
           "--seeds", "2", "--epochs", "1", "--batch-size", "8", "--datasets", "senti-a"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "2 to train" in first.stdout
    names = sorted(m["name"] for m in Zoo(home).ls(kind="finetune"))
    assert names == ["senti-a-s0", "senti-a-s1"]
    assert {m["task"] for m in Zoo(home).ls(kind="finetune")} == {"sentiment"}
    again = subprocess.run(cmd[:-1] + ["senti-a", "senti-b"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "2 of 4 models already" in again.stdout and "2 to train" in again.stdout
    times = json.loads((home / "real_zoo_times.json").read_text())
    assert sorted(times) == ["senti-a-s0", "senti-a-s1", "senti-b-s0", "senti-b-s1"]
    bad = subprocess.run(cmd[:-1] + ["nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown dataset" in bad.stderr
    # A rebuild (fixed threads) gives the same weights, so an earlier report's rows still describe it.
    home2 = tmp_path / "zoo2"
    rebuilt = subprocess.run([sys.executable, str(script), "--data", str(data), "--home", str(home2), "--base",
                              str(ckpts["base"]), "--seeds", "1", "--epochs", "1", "--batch-size", "8",
                              "--datasets", "senti-a"], capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    import numpy as np
    from safetensors.numpy import load_file

    def weights(h: Path) -> dict:
        uri = Path(next(m["uri"] for m in Zoo(h).ls(kind="finetune") if m["name"] == "senti-a-s0"))
        return {k: v for f in sorted(uri.glob("*.safetensors")) for k, v in load_file(f).items()}

    w1, w2 = weights(home), weights(home2)
    assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)


@pytest.mark.slow
def test_reproduce_script_clusters_and_map(filled, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "docs"
    script = Path(__file__).parent.parent / "scripts" / "reproduce.py"
    r = subprocess.run([sys.executable, str(script), "--home", str(filled.home), "--out", str(out),
                        "--stages", "clusters,map"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "reproduction.json").read_text())
    by = {row["level"]: row for row in res["clusters"]["rows"]}
    assert by["dataset"]["k"] == 2 and by["dataset"]["sketch_purity"] == 1.0 and by["dataset"]["exact_purity"] == 1.0
    assert by["dataset"]["sketch_exact_rand_index"] == 1.0 and by["task"]["k"] == 1
    fid = {r["setting"]: r for r in res["fidelity"]}
    # exact, then each space the stage uses (d = 1024 and the d = 4096 it adds) alone and
    # re-ranked, and the default query path of `zoo nearest` (automatic re-rank)
    assert fid["exact"]["knn5_overlap"] == 1.0 and len(fid) == 6
    assert {s.split(" (")[0].split(" + ")[0] for s in fid} == {"exact", "sketch d=1024", "sketch d=4096",
                                                               "default query path: sketch d=1024"}
    assert all(0.0 <= r["knn5_overlap"] <= 1.0 for r in fid.values())
    md = (out / "REPRODUCTION.md").read_text()
    assert "| dataset | 2 |" in md and "100.0%" in md and "## Sketch answers against exact ones" in md
    assert (out / "map-dataset.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, str(script), "--home", str(filled.home), "--out", str(out), "--stages", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown stage" in bad.stderr


@pytest.mark.slow
def test_reproduce_interior_and_start_resume(tmp_path, ckpts):
    """The experiments of scripts/reproduce.py run through the CLI on a tiny real zoo, register
    their models in a second zoo (the real one stays as built), and resume from their cache."""
    import subprocess
    import sys

    from conftest import write_sentiment
    from zoo import Zoo

    data = tmp_path / "data"
    tasks = {"senti-a": "sentiment", "senti-b": "sentiment", "topic-a": "topic"}
    for i, name in enumerate(tasks):
        (data / name).mkdir(parents=True)
        for j, (split, n) in enumerate((("train", 24), ("dev", 12), ("test", 12))):
            path = write_sentiment(data / name / f"{split}.jsonl", n, seed=10 * i + j)
            if tasks[name] == "topic":  # another label space: a task of its own
                path.write_text(path.read_text().replace('"pos"', '"sport"').replace('"neg"', '"news"'))
    (data / "datasets.json").write_text(json.dumps({n: {"task": t} for n, t in tasks.items()}))
    home, work, out = tmp_path / "zoo", tmp_path / "work", tmp_path / "docs"
    scripts = Path(__file__).parent.parent / "scripts"
    r = subprocess.run([sys.executable, str(scripts / "real_zoo.py"), "--data", str(data), "--home", str(home),
                        "--base", str(ckpts["base"]), "--seeds", "2", "--epochs", "1", "--batch-size", "8"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, str(scripts / "reproduce.py"), "--home", str(home), "--data", str(data), "--work", str(work),
           "--out", str(out), "--stages", "interior,start,advice", "--seeds", "1", "--fewshot-examples", "8",
           "--fewshot-epochs", "1", "--full-epochs", "1", "--trial-examples", "16", "--trial-folds", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "reproduction.json").read_text())
    rows = {(x["dataset"], x["point"]): x for x in res["interior"]["dataset_level"]}
    for ds in tasks:
        # With two seeds the midpoint and the centroid have the same members and weights: one model.
        mid, cen = rows[(ds, "interpolation α=0.5")], rows[(ds, "centroid")]
        assert mid["name"] == cen["name"] and mid["accuracy"] == cen["accuracy"]
        ext = rows[(ds, "extrapolation α=1.5")]
        assert ext["vs_nearer"] == pytest.approx(ext["accuracy"] - ext["endpoints"][1])
        assert 0 <= mid["accuracy"] <= 1 and mid["vs_worst"] >= mid["vs_mean"] >= mid["vs_best"]
    task = res["interior"]["task_level"]
    assert {x["dataset"] for x in task} == set(tasks)
    assert all(x["vs_base"] == pytest.approx(x["accuracy"] - x["base"]) for x in task)
    st = res["start"]
    for setting in ("few-shot", "full"):
        per = st["per_dataset"][setting]
        assert sorted(per) == sorted(tasks)
        assert set(per["senti-a"]["accuracy"]) == {"base", "all-centroid", "task-centroid", "off-centroid"}
        assert set(per["topic-a"]["accuracy"]) == {"base", "all-centroid", "off-centroid"}
        sm = st["summary"][setting]["task-centroid"]
        assert sm["wins"] + sm["ties"] + sm["losses"] == sm["n"] == 2
        assert st["summary"][setting]["off-centroid"]["n"] == 3
    few = [line for line in (work / "fewshot" / "senti-a.jsonl").read_text().splitlines() if line]
    assert len(few) == 8 and {json.loads(x)["label"] for x in few} == {"pos", "neg"}
    # The real zoo holds only what real_zoo.py made; the experiments' models live in the work zoo.
    assert sorted(m["name"] for m in Zoo(home).ls(kind="finetune")) == sorted(f"{d}-s{i}" for d in tasks for i in (0, 1))
    # select-start --train ran trials of every start on each dataset's training file, on- and off-region.
    for setting, n_examples in (("few-shot", 8), ("full", 16)):
        for region, starts in (("on", {"base", "all-centroid", "task-centroid", "mixture"}),
                               ("off", {"base", "off-centroid", "mixture"})):
            picks = res["advice"]["picks"][region][setting]
            assert sorted(picks) == sorted(tasks)
            for ds, p in picks.items():
                assert p["trial_examples"] == n_examples and p["recommended"] in starts and p["reason"]
                want = starts - ({"task-centroid"} if ds == "topic-a" else set())
                assert set(p["expected_gain"]) == want and p["expected_gain"]["base"] == 0.0
                assert set(p["logme_gain"]) == want and p["logme_gain"]["base"] == 0.0
                assert sum(p["mixture_weights"].values()) == pytest.approx(1.0)
                assert all(0 <= a <= 1 for a in p["trial_accuracy"].values())
                # A recommended mixture is not among the start stage's starts: fine-tuned to be judged.
                assert (p["recommended"] == "mixture") == ("mixture_accuracy" in p)
            j = st[f"{region}_region"][setting]
            assert j["select_start_judged"] == 3 and 0 <= j["select_start_best"] <= 3
            assert j["select_start_worst_loss"] >= 0.0
    # Every select-start call saw the experiment's fine-tunes only (never a recommended mixture's):
    # its family centroid averaged the models of the other datasets (on-region) or other tasks (off).
    for key, v in json.loads((work / "advice-cache.json").read_text()).items():
        if key.startswith("advice:"):
            region, ds = key.split(":")[1], key.split(":")[3]
            fam = next(c for c in v["result"]["candidates"] if c["category"] == "family-centroid")
            assert fam["evidence"]["members"] == (4 if region == "on" or ds == "topic-a" else 2), key
    # The off-region zoo of a task holds no model of it.
    assert {m["task"] for m in Zoo(work / "advice-zoo-without-sentiment").ls(kind="finetune")} == {"topic"}
    assert Zoo(home).ls(kind="centroid") == []
    zoos = [work, work / "advice-zoo", work / "advice-zoo-without-topic"]
    counts = [len(Zoo(z).ls()) for z in zoos]
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert [len(Zoo(z).ls()) for z in zoos] == counts  # resumed from the caches: nothing made twice
    res2 = json.loads((out / "reproduction.json").read_text())
    assert res2["advice"]["picks"] == res["advice"]["picks"] and res2["start"]["per_dataset"] == st["per_dataset"]
    text = (out / "REPRODUCTION.md").read_text()
    assert "## select-start's advice" in text and "## Starting points" in text and "off-centroid" in text
    # A lost cache: a new work dir, the report's rows carried from the earlier report of this zoo
    # (checked by the exact pair distances the clusters stage records), one dataset asked again.
    r = subprocess.run([sys.executable, str(scripts / "reproduce.py"), "--home", str(home), "--out", str(out),
                        "--stages", "clusters"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out2 = tmp_path / "docs2"
    cmd2 = [*cmd[:cmd.index("--work")], "--work", str(tmp_path / "work2"), "--out", str(out2),
            "--stages", "start,advice", *cmd[cmd.index("--seeds"):], "--settings", "full"]
    r = subprocess.run([*cmd2, "--targets", "topic-a"], capture_output=True, text=True)  # one dataset asked again
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads((out2 / "reproduction.json").read_text())["start"]["per_dataset"]["full"]) == ["topic-a"]
    cmd2 += ["--report-only", "--carry-from", str(out / "reproduction.json")]
    r = subprocess.run(cmd2, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res3 = json.loads((out2 / "reproduction.json").read_text())
    assert res3["start"]["per_dataset"]["full"] == st["per_dataset"]["full"]  # the fine-tunes are seeded: same
    assert sorted(res3["start"]["carried"]["rows"]["full"]) == ["senti-a", "senti-b"]
    assert res3["advice"]["picks"]["on"]["full"] == res["advice"]["picks"]["on"]["full"]
    assert sorted(res3["advice"]["carried"]["rows"]["on:full"]) == ["senti-a", "senti-b"]
    assert res3["start"]["on_region"]["full"]["select_start_judged"] == 3
    assert "Carried from `" in (out2 / "REPRODUCTION.md").read_text()
    other = json.loads((out / "reproduction.json").read_text())
    other["clusters"]["pair_probe"]["same dataset, different seed"]["mean_exact_cosine_distance"] += 1e-2  # a replaced model
    (tmp_path / "other.json").write_text(json.dumps(other))
    bad = subprocess.run([*cmd2[:-1], str(tmp_path / "other.json")], capture_output=True, text=True)
    assert bad.returncode == 1 and "measured on another zoo" in bad.stderr
    # The judge stage: one more seed for every judged start of the full setting and each
    # recommended mixture, added to the report's rows; select-start is not asked again.
    judge = list(cmd)
    judge[judge.index("--stages") + 1] = "judge"
    judge += ["--settings", "full", "--judge-seeds", "2"]
    before = json.loads((out / "reproduction.json").read_text())
    r = subprocess.run(judge, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res4 = json.loads((out / "reproduction.json").read_text())
    for ds, row in res4["start"]["per_dataset"]["full"].items():
        was = before["start"]["per_dataset"]["full"][ds]
        assert {k: v[:1] for k, v in row["runs"].items()} == was["runs"] and all(len(v) == 2 for v in row["runs"].values())
        assert row["accuracy"] == pytest.approx({k: sum(v) / 2 for k, v in row["runs"].items()})
    assert res4["start"]["per_dataset"]["few-shot"] == before["start"]["per_dataset"]["few-shot"]
    for region in ("on", "off"):
        for ds, p in res4["advice"]["picks"][region]["full"].items():
            if p["recommended"] == "mixture":
                assert p["mixture_seeds"] == 2 and len(p["mixture_runs"]) == 2
                assert p["mixture_runs"][0] == before["advice"]["picks"][region]["full"][ds]["mixture_accuracy"]
                assert p["mixture_accuracy"] == pytest.approx(sum(p["mixture_runs"]) / 2)
        assert res4["start"]["judge"]["before"][region]["full"]["select_start_best"] == \
            before["start"][f"{region}_region"]["full"]["select_start_best"]
    assert sorted(res4["start"]["judge"]["added"]["full"]) == sorted(tasks) and res4["start"]["judge"]["not_done"] == {}
    assert res4["start"]["judge"]["pair_rel_diff"] == 0.0
    assert "Judge stage (full)" in (out / "REPRODUCTION.md").read_text()
    counts = [len(Zoo(z).ls()) for z in zoos]
    r = subprocess.run(judge, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [len(Zoo(z).ls()) for z in zoos] == counts  # nothing fine-tuned twice
    assert json.loads((out / "reproduction.json").read_text())["start"]["per_dataset"] == res4["start"]["per_dataset"]
    empty = [*judge[:judge.index("--out")], "--out", str(tmp_path / "nothing"), *judge[judge.index("--out") + 2:]]
    bad = subprocess.run(empty, capture_output=True, text=True)
    assert bad.returncode == 1 and "run those first" in bad.stderr


@pytest.mark.slow
def test_seed_study_compares_seed_and_data_distances(tmp_path, ckpts):
    import subprocess
    import sys

    from conftest import write_sentiment

    data = tmp_path / "data"
    for i, name in enumerate(("d1", "d2")):
        (data / name).mkdir(parents=True)
        for j, split in enumerate(("train", "dev")):
            write_sentiment(data / name / f"{split}.jsonl", 16, seed=10 * i + j)
    (data / "datasets.json").write_text(json.dumps({"d1": {"task": "t"}, "d2": {"task": "t"}}))
    out = tmp_path / "study.json"
    script = Path(__file__).parent.parent / "scripts" / "seed_study.py"
    r = subprocess.run([sys.executable, str(script), "--data", str(data), "--datasets", "d1", "d2", "--base",
                        str(ckpts["base"]), "--home", str(tmp_path / "zoo"), "--epochs", "1", "--max-length", "16",
                        "--batch-size", "8", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res["inits"]) == {"random", "probe"} and len(res["pairs"]) == 12  # 6 pairs of 4 models, per init
    for init, x in res["inits"].items():
        pd = {tuple(k.split()): v for k, v in res["pairs"].items() if f"-{init}-" in k}
        same_ds = [v for (a, b), v in pd.items() if a.split(f"-{init}-")[0] == b.split(f"-{init}-")[0]]
        same_seed = [v for (a, b), v in pd.items() if a[-2:] == b[-2:] and a.split(f"-{init}-")[0] != b.split(f"-{init}-")[0]]
        assert len(same_ds) == 2 and len(same_seed) == 2
        assert x["same_dataset_different_seed"] == pytest.approx(sum(same_ds) / 2)
        assert x["ratio"] == pytest.approx(x["same_dataset_different_seed"] / x["same_seed_different_dataset"])
        assert all(0 <= a <= 1 for a in x["dev_accuracy"].values())


def test_reproduce_cache_shared_by_two_runs_keeps_both(reproduce_script, tmp_path):
    """Two stages run side by side on one cache file: each one's results survive the other's saves."""
    path = tmp_path / "cache.json"
    a, b = reproduce_script.Cache(path), reproduce_script.Cache(path)
    a.put("start", "x", {"v": 1}, 1.5)
    b.put("interior", "y", {"v": 2})
    a.put("start", "z", [3])
    got = json.loads(path.read_text())
    assert {k: v["result"] for k, v in got.items()} == {"x": {"v": 1}, "y": {"v": 2}, "z": [3]}
    assert got["x"]["seconds"] == 1.5 and got["y"]["stage"] == "interior"
    assert reproduce_script.Cache(path, only_cached=True).call("start", "y", tmp_path) == {"v": 2}
    with pytest.raises(reproduce_script.Missing):
        reproduce_script.Cache(path, only_cached=True).call("start", "w", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json", "cache.lock"]


def test_reproduction_json_has_no_nan(reproduce_script):
    """A correlation of fewer than three pairs (NaN in Python) is written as null: the file parses in any JSON reader."""
    rep = reproduce_script
    assert rep.pearson([(0.1, 0.2)]) != rep.pearson([(0.1, 0.2)])  # NaN in memory
    out = rep.strict_json({"a": [float("nan"), 1.5, {"b": float("inf")}], "c": (2, None), "d": "nan"})
    assert out == {"a": [None, 1.5, {"b": None}], "c": [2, None], "d": "nan"}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert (rep.pts(None), rep.pts(float("nan")), rep.corr(0.4567), rep.pct(0.5)) == ("n/a", "n/a", "0.46", "50.0%")


def test_reproduce_cache_forgets_a_dropped_result(reproduce_script, tmp_path):
    """A dropped result is gone from the file too: the next save does not merge it back."""
    path = tmp_path / "cache.json"
    c = reproduce_script.Cache(path)
    c.put("advice", "stale", {"v": 1})
    c.put("advice", "kept", {"v": 2})
    c.drop("stale")
    c.put("advice", "new", {"v": 3})
    assert sorted(json.loads(path.read_text())) == ["kept", "new"] and "stale" not in c.data
    with pytest.raises(reproduce_script.Missing):
        reproduce_script.Cache(path, only_cached=True).call("advice", "stale", tmp_path)


def test_reproduce_scrubs_an_advice_zoo_back_to_the_experiments_models(reproduce_script, filled):
    """select-start's centroids are specs over a zoo's fine-tunes: the reproduction removes
    any fine-tune that is not the experiment's (a recommended mixture's) before a call."""
    rep = reproduce_script
    names = sorted(m["name"] for m in filled.ls(kind="finetune"))
    assert len(names) == 6
    made = filled.centroid(names=names[3:], out="made-from-them")  # derived models do not stop the scrub
    assert sorted(rep.scrub(filled.home, set(names[:4]))) == names[4:]
    assert [m["name"] for m in filled.ls(kind="centroid")] == [made.name]
    assert sorted(m["name"] for m in filled.ls(kind="finetune")) == names[:4]
    assert rep.scrub(filled.home, set(names[:4])) == []
    assert [m["name"] for m in filled.ls(kind="base")] == ["base"]
    sel = {"candidates": [{"category": "base", "evidence": {}},
                          {"category": "family-centroid", "evidence": {"members": 18}}]}
    assert rep.family_members(sel) == 18 and rep.family_members({"candidates": sel["candidates"][:1]}) is None


def _probe(same_ds: float) -> dict:
    return {"same dataset, different seed": {"pairs": 10, "mean_exact_cosine_distance": same_ds},
            "same seed, different task": {"pairs": 10, "mean_exact_cosine_distance": 0.99}}


def test_reproduce_carries_rows_only_from_a_report_of_the_same_zoo(reproduce_script):
    rep = reproduce_script
    prev = {"clusters": {"pair_probe": _probe(0.669030007724327)}}
    assert rep.check_same_zoo(prev, _probe(0.669030007724327), "old.json") == 0.0
    # Two measured rebuilds of the real zoo: the same weights up to float order, and another build.
    assert rep.check_same_zoo(prev, _probe(0.6690296157598474), "old.json") <= rep.SAME_ZOO_TOL
    rebuilt = rep.check_same_zoo(prev, _probe(0.6689908475872052), "old.json")
    assert rep.SAME_ZOO_TOL < rebuilt == pytest.approx((0.669030007724327 - 0.6689908475872052) / 0.6689908475872052)
    with pytest.raises(rep.NotSameZoo, match="'same dataset, different seed' mean exact distance 0.66903"):
        rep.check_same_zoo(prev, _probe(0.675), "old.json")  # a replaced model moves it about 1e-2
    other = _probe(0.669030007724327)
    other["same seed, different task"]["pairs"] = 9
    with pytest.raises(rep.NotSameZoo, match="over 10 pairs there, 0.99 over 9 pairs here"):
        rep.check_same_zoo(prev, other, "old.json")
    fewer = {k: v for k, v in _probe(0.669030007724327).items() if k.startswith("same seed")}
    with pytest.raises(rep.NotSameZoo, match="pair kinds"):
        rep.check_same_zoo(prev, fewer, "old.json")
    with pytest.raises(rep.NotSameZoo, match="has no clusters.pair_probe"):
        rep.check_same_zoo({"start": {}}, _probe(0.5), "old.json")


def _row(base: float, cen: float) -> dict:
    return {"task": "t", "accuracy": {"base": base, "all-centroid": cen}, "best": "all-centroid"}


def _pick(rec: str) -> dict:
    return {"task": "t", "recommended": rec, "expected_gain": {"base": 0.0}}


def test_reproduce_carry_fills_only_what_this_run_lacks(reproduce_script):
    """Rows this run measured are kept; rows it could not run come from the earlier report,
    listed as carried, and the start summary counts them."""
    rep = reproduce_script

    results = {"start": {"settings": {"full": {}}, "per_dataset": {"full": {"a": _row(0.5, 0.6)}},
                         "not_done": {"full": ["b"]}, "summary": {}},
               "advice": {"picks": {"on": {"full": {"a": _pick("base")}}}, "not_done": {"on:full": ["b"]}}}
    prev = {"start": {"per_dataset": {"full": {"a": _row(0.1, 0.0), "b": _row(0.7, 0.68), "c": _row(0.2, 0.3)}},
                      "seconds": 600.0},
            "advice": {"picks": {"on": {"full": {"a": _pick("mixture"), "b": _pick("all-centroid"),
                                                 "c": _pick("base")}}}, "seconds": 60.0}}
    got = rep.carry(results, prev, "old.json")
    assert got == {"start": {"full": ["b"]}, "advice": {"on:full": ["b"]}}
    st = results["start"]
    assert st["per_dataset"]["full"]["a"]["accuracy"]["base"] == 0.5  # this run's row stays
    assert st["per_dataset"]["full"]["b"] == prev["start"]["per_dataset"]["full"]["b"]
    assert "c" not in st["per_dataset"]["full"]  # neither asked for nor waiting: not carried
    assert st["not_done"]["full"] == [] and st["carried"]["from"] == "old.json"
    sm = st["summary"]["full"]["all-centroid"]
    assert (sm["wins"], sm["losses"], sm["n"]) == (1, 1, 2) and sm["mean_gain"] == pytest.approx((0.1 - 0.02) / 2)
    ad = results["advice"]
    assert ad["picks"]["on"]["full"]["a"]["recommended"] == "base"
    assert ad["picks"]["on"]["full"]["b"]["recommended"] == "all-centroid" and ad["not_done"]["on:full"] == []
    assert ad["carried"] == {"from": "old.json", "rows": {"on:full": ["b"]}, "seconds": 60.0,
                             "same_weights": True, "pair_rel_diff": 0.0}
    assert rep.carry(results, prev, "old.json") == {}  # nothing left to carry


def test_reproduce_carries_only_whole_datasets_from_another_build(reproduce_script):
    """From a rebuild that is not bit-exact, a dataset's rows are carried only when this run has
    none of them, so no advice is judged against starts of other weights."""
    rep = reproduce_script

    # a: this run's start row, no advice yet; d: this run's off-region advice, no start row;
    # b: nothing of this run's.
    results = {"start": {"settings": {"full": {}}, "per_dataset": {"full": {"a": _row(0.5, 0.6)}},
                         "not_done": {"full": ["b", "d"]}, "summary": {}},
               "advice": {"picks": {"on": {"full": {}}, "off": {"full": {"d": _pick("base")}}},
                          "not_done": {"on:full": ["a", "b", "d"], "off:full": ["a", "b"]}}}
    prev = {"start": {"per_dataset": {"full": {x: _row(0.7, 0.68) for x in "abd"}}, "seconds": 600.0},
            "advice": {"picks": {r: {"full": {x: _pick("all-centroid") for x in "abd"}} for r in ("on", "off")},
                       "seconds": 60.0}}
    got = rep.carry(results, prev, "old.json", rel_diff=6e-5)
    assert got == {"start": {"full": ["b"]}, "advice": {"on:full": ["b"], "off:full": ["b"]}}
    assert results["start"]["not_done"]["full"] == ["d"]
    assert results["advice"]["not_done"] == {"on:full": ["a", "d"], "off:full": ["a"]}
    assert results["advice"]["carried"]["same_weights"] is False
    assert "differ from this build's by 6e-05 relative" in rep.carried_from(results["advice"]["carried"])
    # The same report from the same weights fills every missing row.
    results2 = {"start": {"settings": {"full": {}}, "per_dataset": {"full": {}}, "not_done": {"full": ["d"]},
                          "summary": {}},
                "advice": {"picks": {"on": {"full": {}}}, "not_done": {"on:full": ["a"]}}}
    assert rep.carry(results2, prev, "old.json", rel_diff=6e-7) == {"start": {"full": ["d"]},
                                                                   "advice": {"on:full": ["a"]}}
