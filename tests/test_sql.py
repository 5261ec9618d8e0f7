"""The SQL surface cannot write or reach out: one query, parsed by DuckDB, sandboxed."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zoo.cli.main import main
from zoo.errors import ReadOnlySQL, ZooValueError


@pytest.fixture(scope="module")
def zoo_ro(ckpts, tmp_path_factory):
    """One filled zoo for the whole module: every test here only reads (or is refused)."""
    from zoo import Zoo

    z = Zoo(tmp_path_factory.mktemp("sqlzoo") / "zoo")
    z.add([ckpts["base"]], name="base")
    for ds in ("a", "b"):
        z.add([ckpts[f"{ds}{i}"] for i in range(3)], dataset=ds, task="t")
    return z


def _counts(z):
    return {t: z.sql(f"SELECT count(*) FROM {t}")[1][0][0] for t in ("models", "lineage", "sketches")}


ATTACKS = [
    # several statements: the first a harmless query, the rest writes
    "SELECT 1; ATTACH '{tmp}/x.duckdb' AS m (READ_WRITE); USE m; DETACH catalog; "
    "ATTACH '{catalog}' AS c2 (READ_WRITE); DELETE FROM c2.lineage",
    "SELECT 1; COPY (SELECT 'pwned') TO '{tmp}/pwned.csv'",
    "COPY (SELECT 'pwned') TO '{tmp}/pwned.csv'",
    "COPY lineage TO '{tmp}/pwned.csv'",
    "ATTACH '{catalog}' AS c2 (READ_WRITE)",
    "DETACH catalog",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "DELETE FROM lineage",
    "WITH x AS (SELECT 1) DELETE FROM lineage",
    "insert into models(name) values ('x')",
    "DROP TABLE models",
    "CREATE TABLE t AS SELECT 1",
    "CHECKPOINT",
    "EXPORT DATABASE '{tmp}/dump'",
]
READS = ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')",
         "SELECT * FROM glob('/*')", "SELECT * FROM '{tmp}/x.csv'", "SELECT * FROM read_parquet('{tmp}/x.parquet')"]


@pytest.mark.parametrize("attack", ATTACKS + READS)
def test_attack_is_refused_and_changes_nothing(zoo_ro, tmp_path, attack):
    (tmp_path / "x.csv").write_text("a\n1\n")
    before = _counts(zoo_ro)
    sql = attack.format(tmp=tmp_path, catalog=zoo_ro.catalog_path)
    with pytest.raises((ReadOnlySQL, ZooValueError)) as e:
        zoo_ro.sql(sql)
    assert "\n" not in str(e.value)
    assert _counts(zoo_ro) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]  # nothing written: no pwned.csv, no dump, no x.duckdb


def test_refusals_name_the_statement(zoo_ro):
    with pytest.raises(ReadOnlySQL, match="refuses 'DELETE' statements"):
        zoo_ro.sql("DELETE FROM models")
    with pytest.raises(ReadOnlySQL, match="exactly one statement, got 2"):
        zoo_ro.sql("SELECT 1; SELECT 2")
    with pytest.raises(ReadOnlySQL, match="cannot reach outside the catalog"):
        zoo_ro.sql("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(ZooValueError, match="syntax error"):
        zoo_ro.sql("SELEC 1")
    with pytest.raises(ZooValueError, match="empty SQL"):
        zoo_ro.sql("  ")


def test_queries_and_macros_still_answer(zoo_ro):
    cols, rows = zoo_ro.sql("SELECT name FROM zoo_nearest('ft-a0', 2)")
    assert cols == ["name"] and [r[0] for r in rows] == [r["name"] for r in zoo_ro.nearest("ft-a0", k=2).results]
    assert zoo_ro.sql("SELECT count(*) FROM models", limit=1)[1] == [(7,)]
    assert zoo_ro.sql("WITH x AS (SELECT name FROM models) SELECT count(*) FROM x")[1] == [(7,)]
    assert len(zoo_ro.sql("SHOW TABLES")[1]) >= 7 and zoo_ro.sql("DESCRIBE models")[1]


def test_a_long_query_is_stopped_at_its_timeout(zoo_ro):
    with pytest.raises(ZooValueError, match="ran past --timeout 0.2s"):
        zoo_ro.sql("SELECT sum(a.range * b.range) FROM range(300000) a, range(300000) b", timeout=0.2)
    assert zoo_ro.sql("SELECT 1")[1] == [(1,)]


def test_cli_sql_csv_json_and_bad_options(filled):
    def run(*args, code=0):
        res = CliRunner().invoke(main, ["--home", str(filled.home), "sql", *args])
        assert res.exit_code == code, res.output
        return res

    out = run("SELECT name, dataset, NULL AS x FROM models WHERE name IN ('base', 'ft-a0') ORDER BY name", "--csv").stdout
    assert out.splitlines() == ["name,dataset,x", "base,,", "ft-a0,a,"]
    assert json.loads(run("SELECT 1 AS one", "--json").stdout) == [{"one": 1}]
    for args in (("SELECT 1", "--limit", "0"), ("SELECT 1", "--timeout", "-1")):
        err = run(*args, code=2).stderr.strip()
        assert err.startswith("error: ") and "\n" not in err
    err = run("SELECT 1; DELETE FROM models", code=1).stderr.strip()
    assert err == "error: `zoo sql` runs exactly one statement, got 2; send them one at a time"


def test_memory_cap_comes_from_the_environment(zoo_ro, monkeypatch):
    assert zoo_ro.sql("SELECT current_setting('memory_limit')")[1][0][0] == "953.6 MiB"  # 1 GB by default
    monkeypatch.setenv("ZOO_SQL_MEMORY", "100000000")
    assert zoo_ro.sql("SELECT current_setting('memory_limit')")[1][0][0] == "95.3 MiB"
    monkeypatch.setenv("ZOO_SQL_MEMORY", "1GB")
    with pytest.raises(ZooValueError, match="ZOO_SQL_MEMORY='1GB' is not a whole number"):
        zoo_ro.sql("SELECT 1")
