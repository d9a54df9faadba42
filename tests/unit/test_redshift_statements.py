"""Every statement the Redshift loader sends, pinned (golden statements): no Redshift cluster
is reachable here, so the SQL text and the COPY manifests are what can be checked. The AWS
documentation each statement follows is named in ``loaders/warehouse/redshift.py`` and in the
README's "Redshift" section.

The warehouse runs on a recording connection: it answers the catalog questions from the tables
the statements created (a tiny catalog), ``pg_last_copy_count()`` with the rows each COPY was
given, and records every statement with its parameters."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from loaders.config import WarehouseSettings
from loaders.landing import LandedObject
from loaders.rds import TableExtract
from loaders.warehouse import FileRejected, RedshiftWarehouse, redshift_manifest

ROLE = "arn:aws:iam::123456789012:role/redshift-copy"
AT = datetime(2026, 1, 5, 10, 0, 0)


class _Store:
    """An S3 landing zone's naming, the manifests it is given, and each object's header."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = objects or {}
        self.written: dict[str, str] = {}

    def uri(self, key: str) -> str:
        return f"s3://bucket/landing/{key}"

    def write_text(self, key: str, text: str) -> None:
        self.written[key] = text

    def open(self, key: str) -> Any:
        import io

        return io.BytesIO(self.objects[key])

    def list(self, prefix: str) -> list[LandedObject]:
        return [
            LandedObject(key, len(data), f"etag-{key}")
            for key, data in sorted(self.objects.items())
            if key.startswith(prefix)
        ]


class _Cluster:
    """A recording connection with a tiny catalog (see the module)."""

    def __init__(self, copy_rows: list[int], longest: tuple[int, ...] = (3, 5, 19)) -> None:
        self.sql: list[str] = []
        self.commits = 0
        self.tables: dict[tuple[str, str], list[str]] = {}
        self.schemas: set[str] = set()
        self.copy_rows = list(copy_rows)
        self.longest = longest
        self.last_copy = 0

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def commit(self) -> None:
        self.commits += 1
        self.sql.append("-- commit")

    def rollback(self) -> None:
        self.sql.append("-- rollback")

    def close(self) -> None:
        pass


class _Cursor:
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster
        self.result: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        c = self.cluster
        text = " ".join(sql.split())
        c.sql.append(text)
        self.result = [(0,)]
        if text.startswith("create schema "):
            c.schemas.add(text.split()[-1])
        elif created := re.match(r"create table (\w+)\.(\w+) \((.*)\)", text):
            columns = [col.strip().split()[0].strip('"') for col in created[3].split(", ")]
            c.tables[(created[1], created[2])] = columns
        elif view := re.match(r"create view (\w+)\.(\w+) as select ", text):
            c.tables[(view[1], view[2])] = ["(a view)"]
        elif added := re.match(r"alter table (\w+)\.(\w+) add column (\w+)", text):
            c.tables[(added[1], added[2])].append(added[3])
        elif text.startswith("select count(*) from pg_namespace"):
            self.result = [(int(params[0] in c.schemas),)]
        elif text.startswith("select column_name from information_schema.columns"):
            self.result = [(name,) for name in c.tables.get(tuple(params), [])]
        elif text.startswith("copy _landing"):
            c.last_copy = c.copy_rows.pop(0)
        elif text == "select pg_last_copy_count()":
            self.result = [(c.last_copy,)]
        elif text.startswith("select max(octet_length"):
            self.result = [c.longest]
        elif text.startswith("select coalesce(max(load_seq), 0) + 1"):
            self.result = [(1,)]
        elif text.startswith("select target_table, object_key, etag from raw_meta.load_ledger"):
            self.result = []  # no snapshot loaded yet

    def fetchone(self) -> tuple[Any, ...]:
        return self.result[0]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.result

    def close(self) -> None:
        pass


def _redshift(cluster: _Cluster, region: str = "") -> RedshiftWarehouse:
    wh = RedshiftWarehouse(
        WarehouseSettings(
            kind="redshift", user="loader", dbname="music", iam_role=ROLE, region=region
        )
    )
    wh.conn = cluster
    return wh


COLUMNS = (
    "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
)
SETUP = [
    "select count(*) from pg_namespace where nspname = %s",
    "create schema raw_streams",
    "select count(*) from pg_namespace where nspname = %s",
    "create schema raw_rds",
    "select count(*) from pg_namespace where nspname = %s",
    "create schema raw_meta",
    COLUMNS,
    "create table raw_streams.streams (user_id varchar(256), track_id varchar(256), "
    "listen_time varchar(256), _source_file varchar(1024), _line_number bigint, "
    "_loaded_at timestamp, _load_id varchar(256), _load_seq bigint) compound sortkey (_load_seq)",
    COLUMNS,
    "create table raw_meta.load_ledger (object_key varchar(1024) not null, etag varchar(128) "
    "not null, size_bytes bigint, target_table varchar(256), row_count bigint, status "
    "varchar(16) not null, reason varchar(4000), load_id varchar(256), loaded_at timestamp, "
    "superseded_at timestamp, load_seq bigint, superseded_seq bigint)",
    COLUMNS,
    COLUMNS,
    "create table raw_meta.dbt_builds (load_id varchar(256), started_at timestamp, "
    "finished_at timestamp, load_seq bigint, published_at timestamp)",
    COLUMNS,
    COLUMNS,
    COLUMNS,
    "create view raw_meta.last_green_build as select coalesce(max(load_seq), 0) as load_seq "
    "from raw_meta.dbt_builds",
    COLUMNS,
    "create view raw_meta.unbuilt_loads as select object_key, etag, target_table, load_id, "
    "load_seq from raw_meta.load_ledger where status = 'loaded' and load_seq > "
    "(select load_seq from raw_meta.last_green_build)",
    "-- commit",
]


def test_setup_creates_only_what_is_missing_with_sized_columns_and_a_sort_key() -> None:
    cluster = _Cluster([])
    _redshift(cluster).setup()
    assert cluster.sql == SETUP
    again = _Cluster([])
    again.schemas, again.tables = cluster.schemas, cluster.tables
    _redshift(again).setup()  # everything exists: no CREATE at all (no privilege needed)
    assert not [sql for sql in again.sql if sql.startswith(("create", "alter"))]


def _ledger_statements(key_rows: int) -> list[str]:
    return [
        "select coalesce(max(load_seq), 0) + 1 from raw_meta.load_ledger",
        "insert into raw_streams.streams (user_id, track_id, listen_time, _source_file, "
        "_line_number, _loaded_at, _load_id, _load_seq) select c1, c2, c3, %s, null, %s, %s, %s "
        "from _landing",
        "select count(*) from raw_meta.load_ledger where object_key = %s "
        "and superseded_seq is null",
        "insert into raw_meta.load_ledger (object_key, etag, size_bytes, target_table, row_count, "
        "status, reason, load_id, loaded_at, load_seq) values (%s, %s, %s, %s, %s, 'loaded', "
        "null, %s, %s, %s)",
        "drop table _landing",
    ]


def test_a_load_group_is_one_transaction_with_one_manifest_copy_per_file() -> None:
    """Two stream files: one LOCK, one COPY each through a manifest naming the one object
    (mandatory, with its size), the rows counted by pg_last_copy_count(), one commit."""
    header = b"user_id,track_id,listen_time\n"
    store = _Store({"streams/a.csv": header + b"1,t,x\n", "streams/b.CSV.GZ": b""})
    objects = [LandedObject("streams/a.csv", 120, "e1"), LandedObject("streams/b.CSV.GZ", 80, "e2")]
    cluster = _Cluster(copy_rows=[2, 7])
    wh = _redshift(cluster)
    import gzip

    store.objects["streams/b.CSV.GZ"] = gzip.compress(header)
    outcomes = wh.load_stream_files(store, objects, load_id="run-1", loaded_at=AT)  # type: ignore[arg-type]
    assert [(o.key, o.status, o.rows) for o in outcomes] == [
        ("streams/a.csv", "loaded", 2),
        ("streams/b.CSV.GZ", "loaded", 7),
    ]
    per_file = [
        "select count(*) from raw_meta.load_ledger where object_key = %s and etag = %s "
        "and status = 'loaded' and superseded_seq is null",
        "create temp table _landing (c1 varchar(65535), c2 varchar(65535), c3 varchar(65535))",
    ]
    assert cluster.sql == [
        "lock raw_meta.load_ledger",
        *per_file,
        "copy _landing from 's3://bucket/landing/manifests/streams/a.csv.manifest' "
        f"format as csv ignoreheader 1 iam_role '{ROLE}' manifest",
        "select pg_last_copy_count()",
        "select max(octet_length(c1)), max(octet_length(c2)), max(octet_length(c3)) from _landing",
        *_ledger_statements(2),
        *per_file,
        "copy _landing from 's3://bucket/landing/manifests/streams/b.CSV.GZ.manifest' "
        f"format as csv ignoreheader 1 iam_role '{ROLE}' gzip manifest",
        "select pg_last_copy_count()",
        "select max(octet_length(c1)), max(octet_length(c2)), max(octet_length(c3)) from _landing",
        *_ledger_statements(7),
        "-- commit",
    ]
    assert cluster.commits == 1
    assert json.loads(store.written["manifests/streams/a.csv.manifest"]) == {
        "entries": [
            {
                "url": "s3://bucket/landing/streams/a.csv",
                "mandatory": True,
                "meta": {"content_length": 120},
            }
        ]
    }
    every_copy = [sql for sql in cluster.sql if sql.startswith("copy ")]
    assert all(re.search(r" from '[^']+\.manifest' .* manifest\b", sql) for sql in every_copy)


def test_a_name_with_pattern_characters_and_a_quote_is_read_literally() -> None:
    key = "streams/it's [ab]*?.csv"
    store = _Store({key: b"listen_time,user_id,track_id\n"})
    cluster = _Cluster(copy_rows=[0])
    _redshift(cluster).load_stream_files(  # type: ignore[arg-type]
        store, [LandedObject(key, 29, "e")], load_id="r", loaded_at=AT
    )
    (copy,) = [sql for sql in cluster.sql if sql.startswith("copy ")]
    assert copy == (
        "copy _landing from 's3://bucket/landing/manifests/streams/it''s [ab]*?.csv.manifest' "
        f"format as csv ignoreheader 1 iam_role '{ROLE}' manifest"
    )
    manifest = json.loads(store.written[f"manifests/{key}.manifest"])
    assert [e["url"] for e in manifest["entries"]] == [f"s3://bucket/landing/{key}"]
    assert "select c2, c3, c1, %s" in " ".join(cluster.sql)  # columns picked by header name


def test_a_value_longer_than_its_column_refuses_the_file_with_the_column_named() -> None:
    store = _Store({"streams/a.csv": b"user_id,track_id,listen_time\n"})
    cluster = _Cluster(copy_rows=[1], longest=(300, 5, 19))
    (outcome,) = _redshift(cluster).load_stream_files(  # type: ignore[arg-type]
        store, [LandedObject("streams/a.csv", 40, "e")], load_id="r", loaded_at=AT
    )
    assert outcome.status == "rejected"
    assert outcome.reason == (
        "a user_id value is 300 bytes long, longer than the 256 bytes "
        "raw_streams.streams.user_id holds on Redshift"
    )
    assert cluster.sql[-1] == "-- rollback" and cluster.commits == 0
    assert not any(sql.startswith("insert") for sql in cluster.sql)


def _songs(rows: int) -> TableExtract:
    return TableExtract(
        table="songs",
        run_id="r1",
        prefix="rds/songs/r1/",
        columns=("track_id", "popularity"),
        row_count=rows,
        sha256="f" * 64,
        parts=("rds/songs/r1/part-00001.csv.gz", "rds/songs/r1/part-00002.csv.gz"),
        size_bytes=300,
    )


def test_an_rds_snapshot_is_one_copy_of_all_its_parts_through_a_manifest() -> None:
    store = _Store(
        {
            "rds/songs/r1/_manifest.json": b"{}",
            "rds/songs/r1/part-00001.csv.gz": b"x" * 100,
            "rds/songs/r1/part-00002.csv.gz": b"x" * 200,
        }
    )
    cluster = _Cluster(copy_rows=[5])
    outcome = _redshift(cluster, region="eu-west-1").load_snapshot(  # type: ignore[arg-type]
        store, _songs(5), load_id="r1", loaded_at=AT
    )
    assert (outcome.status, outcome.rows) == ("loaded", 5)
    assert cluster.sql == [
        "lock raw_meta.load_ledger",
        "select count(*) from raw_meta.load_ledger where object_key = %s and etag = %s "
        "and status = 'loaded' and superseded_seq is null",
        "select target_table, object_key, etag from raw_meta.load_ledger l where status = "
        "'loaded' and target_table like %s and load_seq = (select max(load_seq) from "
        "raw_meta.load_ledger l2 where l2.target_table = l.target_table and l2.status = 'loaded')",
        COLUMNS,
        'create table raw_rds.songs ("track_id" varchar(65535), "popularity" varchar(65535), '
        "_source_file varchar(65535), _loaded_at timestamp, _load_id varchar(65535))",
        "delete from raw_rds.songs",
        "create temp table _landing (c1 varchar(65535), c2 varchar(65535))",
        "copy _landing from 's3://bucket/landing/manifests/rds/songs/r1/copy.manifest' "
        f"format as csv ignoreheader 1 iam_role '{ROLE}' gzip manifest region 'eu-west-1'",
        "select pg_last_copy_count()",
        'insert into raw_rds.songs ("track_id", "popularity", _source_file, _loaded_at, '
        "_load_id) select c1, c2, %s, %s, %s from _landing",
        "drop table _landing",
        "select coalesce(max(load_seq), 0) + 1 from raw_meta.load_ledger",
        "select count(*) from raw_meta.load_ledger where object_key = %s "
        "and superseded_seq is null",
        "insert into raw_meta.load_ledger (object_key, etag, size_bytes, target_table, row_count, "
        "status, reason, load_id, loaded_at, load_seq) values (%s, %s, %s, %s, %s, 'loaded', "
        "null, %s, %s, %s)",
        "-- commit",
    ]
    manifest = json.loads(store.written["manifests/rds/songs/r1/copy.manifest"])
    assert manifest["entries"] == [
        {
            "url": "s3://bucket/landing/rds/songs/r1/part-00001.csv.gz",
            "mandatory": True,
            "meta": {"content_length": 100},
        },
        {
            "url": "s3://bucket/landing/rds/songs/r1/part-00002.csv.gz",
            "mandatory": True,
            "meta": {"content_length": 200},
        },
    ]


def test_a_snapshot_whose_copy_count_differs_from_the_extract_loads_nothing() -> None:
    store = _Store({"rds/songs/r1/part-00001.csv.gz": b"x", "rds/songs/r1/part-00002.csv.gz": b"y"})
    cluster = _Cluster(copy_rows=[4])
    with pytest.raises(ConnectionError, match="loaded 4 rows, the extract wrote 5"):
        _redshift(cluster).load_snapshot(store, _songs(5), load_id="r1", loaded_at=AT)  # type: ignore[arg-type]
    assert cluster.sql[-1] == "-- rollback"


def test_redshift_refuses_a_local_landing_zone() -> None:
    class Local(_Store):
        def uri(self, key: str) -> str:
            return f"/tmp/landing/{key}"

    wh = _redshift(_Cluster([0]))
    with pytest.raises(ValueError, match="MUSIC_ELT_LANDING=s3://"):
        wh._copy_to_temp(wh.conn.cursor(), Local(), [LandedObject("streams/a.csv", 1, "e")], 3)  # type: ignore[arg-type]


def test_the_manifest_lists_exact_urls_as_mandatory_with_sizes() -> None:
    objects = [LandedObject("a.csv", 3, "e"), LandedObject("a.csv.gz", 4, "f")]
    manifest = json.loads(redshift_manifest(objects, ["s3://b/a.csv", "s3://b/a.csv.gz"]))
    assert manifest["entries"] == [
        {"url": "s3://b/a.csv", "mandatory": True, "meta": {"content_length": 3}},
        {"url": "s3://b/a.csv.gz", "mandatory": True, "meta": {"content_length": 4}},
    ]


def test_file_rejected_is_what_a_refused_file_raises() -> None:
    store = _Store({"streams/a.csv": b"user_id,track_id\n"})
    wh = _redshift(_Cluster([]))
    with pytest.raises(FileRejected, match="lacks required column"):
        wh.load_stream_file(store, LandedObject("streams/a.csv", 1, "e"), load_id="r", loaded_at=AT)  # type: ignore[arg-type]
    assert wh.conn.sql == []  # refused on its header: nothing sent
