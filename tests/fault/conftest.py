"""Fixtures for the fault-injection suite: a small generated data set, and a :class:`Stack`
(work directory, RDS database on the tests' PostgreSQL, landing zone local or on moto's S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders.demo.generate import generate
from tests.conftest import pg_dsn
from tests.fault.harness import Stack

# A few thousand plays over two days in 11 files (two gzip), every anomaly the generator makes.
PLAYS, DAYS, USERS, SONGS = 3_000, 2, 300, 200


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generate(out, streams=PLAYS, days=DAYS, seed=7, users=USERS, songs=SONGS)
    return out


def make_stack(request: pytest.FixtureRequest, tmp_path: Path, source: Path, kind: str) -> Stack:
    """A seeded RDS (100-row extraction batches, so extraction takes several steps) and an
    empty landing zone of ``kind``; the environment as a subprocess will see it."""
    db = request.getfixturevalue("pg_database")
    env = {"MUSIC_ELT_RDS_DSN": pg_dsn(db), "MUSIC_ELT_BATCH_SIZE": "100"}
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")  # sets test-only AWS credentials
        env |= {
            "MUSIC_ELT_LANDING": f"s3://{bucket}/music",
            "MUSIC_ELT_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    stack = Stack(workdir=tmp_path / "work", source=source, env=env, landing_kind=kind)
    stack.workdir.mkdir(parents=True)
    stack.seed_rds(pg_dsn(db))
    return stack


@pytest.fixture(params=["local", "s3"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, generated: Path) -> Iterator[Stack]:
    """A stack on each landing zone: the local directory and S3 (moto)."""
    built = make_stack(request, tmp_path, generated, str(request.param))
    yield built
    built.stop_all()


@pytest.fixture
def local_stack(request: pytest.FixtureRequest, tmp_path: Path, generated: Path) -> Iterator[Stack]:
    """A stack on the local landing zone."""
    built = make_stack(request, tmp_path, generated, "local")
    yield built
    built.stop_all()
