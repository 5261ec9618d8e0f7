"""Alembic environment: runs on the connection zoo passes, or on $ZOO_HOME's catalog."""
from __future__ import annotations

import os
from pathlib import Path

from alembic import context

import zoo.db
from zoo.schema import metadata

zoo.db.register_alembic_impl()

config = context.config
conn = config.attributes.get("connection")
if conn is None:
    url = config.get_main_option("sqlalchemy.url") or ""
    if not url or "%(" in url:
        url = zoo.db.catalog_url(Path(os.environ.get("ZOO_HOME", ".zoo")) / "catalog.duckdb")
    engine = zoo.db.sa.create_engine(url)
    with engine.begin() as c:
        context.configure(connection=c, target_metadata=metadata)
        context.run_migrations()
else:
    context.configure(connection=conn, target_metadata=metadata)
    context.run_migrations()
