"""zoo add --ray: the passes as tasks of a local Ray cluster (started by the test, 2 CPUs),
with the same sketches and hashes as a plain add."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    import os

    import ray

    from zoo.fanout import NICENESS

    os.environ.setdefault(NICENESS, "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _sketches(z) -> dict[str, tuple[str, bytes]]:
    cols, rows = z.sql("SELECT m.name, m.content_hash, s.space_id, s.vec FROM sketches s JOIN models m ON m.id = s.model_id")
    return {(r[0], r[2]): (r[1], np.asarray(r[3], dtype=np.float32).tobytes()) for r in rows}


def test_ray_add_equals_plain_add(ray_cluster, ckpts, tmp_path):
    from zoo import Zoo

    paths = [ckpts[f"{d}{s}"] for d in "ab" for s in range(3)]
    plain, fanned = Zoo(tmp_path / "plain"), Zoo(tmp_path / "ray")
    for z, ray in ((plain, None), (fanned, "auto")):
        z.add([ckpts["base"]], name="base")
        res = z.add(paths, dataset="d", ray=ray)
        assert [r.kind for r in res] == ["finetune"] * 6 and all(r.created for r in res)
    assert _sketches(plain) == _sketches(fanned)  # bit-identical vectors and hashes
    assert [m["name"] for m in plain.ls()] == [m["name"] for m in fanned.ls()]
    assert fanned.nearest("ft-a0", k=2).results == plain.nearest("ft-a0", k=2).results


def test_ray_batch_founding_a_family_and_errors(ray_cluster, ckpts, tmp_path):
    """A base and its fine-tunes in one batch (the fine-tunes re-planned on the driver), and a
    bad checkpoint failing the whole batch with its own path in the message."""
    from zoo import Zoo
    from zoo.errors import BadWeights

    from conftest import make_finetune

    z = Zoo(tmp_path / "z")
    res = z.add([ckpts["base"], ckpts["a0"], ckpts["llama"]], ray="auto")
    assert [r.kind for r in res] == ["base", "finetune", "base"] and res[1].family == res[0].family
    bad = make_finetune(ckpts["base"], tmp_path / "bad", seed=3, nan=True)
    with pytest.raises(BadWeights, match=f"^{bad}"):
        z.add([ckpts["a1"], bad], ray="auto")
    assert len(z.ls()) == 3  # all or nothing


def test_cli_ray_starts_a_local_cluster(ckpts, tmp_path):
    """`zoo add --ray` with no cluster running starts a local one and shuts it down again."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    zoo_bin = Path(sys.executable).parent / "zoo"
    env = dict(os.environ, ZOO_HOME=str(tmp_path / "z"), ZOO_RAY_CPUS="2")
    subprocess.run([str(zoo_bin), "add", str(ckpts["base"])], env=env, check=True, capture_output=True)
    out = subprocess.run([str(zoo_bin), "add", str(ckpts["a0"]), str(ckpts["b0"]), "--ray", "--json"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [r["kind"] for r in json.loads(out.stdout)] == ["finetune", "finetune"]
    bad = subprocess.run([str(zoo_bin), "add", str(ckpts["a1"]), "--ray", "ray://127.0.0.1:1"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot join the Ray cluster" in bad.stderr
