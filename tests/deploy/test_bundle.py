"""``make bundle``: one artifact per dbt target, its manifest parsed for that target."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from deploy import bundle
from tests.conftest import REPO


def test_redshift_bundle_carries_a_redshift_manifest(tmp_path: Path) -> None:
    out = tmp_path / "music-elt-redshift"
    result = subprocess.run(
        [
            *("make", "--no-print-directory", "-o", ".venv/.installed-core", "bundle"),
            *("TARGET=redshift", f"BUNDLE_DIR={out}"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = out / "dags" / "dbt_project" / "target" / "airflow" / "manifest.json"
    assert json.loads(manifest.read_text())["metadata"]["adapter_type"] == "redshift"
    assert json.loads((out / "bundle.json").read_text())["target"] == "redshift"

    wheels = sorted((out / "wheels").iterdir())
    assert [w.suffix for w in wheels] == [".whl"]
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert [line for line in requirements if not line.startswith("#")] == [
        "--find-links wheels",
        "-c constraints.txt",
        "music-elt[airflow]==" + wheels[0].name.split("-")[1],
    ]
    lock = REPO / "requirements" / "airflow.lock"
    constraints = (out / "constraints.txt").read_text().splitlines()
    assert [c for c in constraints if not c.startswith("#")] == bundle.pins(lock)
    assert (out / "dags" / "music_streaming_pipeline.py").is_file()
    assert (out / "dags" / "dbt_project" / "dbt_project.yml").is_file()
    assert not (out / "dags" / "dbt_project" / "logs").exists()
    with zipfile.ZipFile(out / "mwaa" / "plugins.zip") as plugins:
        assert sorted(plugins.namelist()) == ["constraints.txt", f"wheels/{wheels[0].name}"]
    mwaa = (out / "mwaa" / "requirements.txt").read_text()
    assert "--constraint /usr/local/airflow/plugins/constraints.txt" in mwaa
    assert "export MUSIC_ELT_TARGET=redshift" in (out / "mwaa" / "startup.sh").read_text()
    assert "FROM ${BASE}" in (out / "Dockerfile").read_text()


def test_a_manifest_of_another_adapter_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"metadata": {"adapter_type": "duckdb"}}))
    with pytest.raises(bundle.BundleError, match="parsed for 'duckdb', not for the redshift"):
        bundle.check_manifest(manifest, "redshift")
    with pytest.raises(bundle.BundleError, match="make manifest DBT_TARGET=postgres"):
        bundle.check_manifest(tmp_path / "missing.json", "postgres")


def test_a_lock_with_anything_but_pins_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text("a==1  # via b\n-e ./here\n")
    with pytest.raises(bundle.BundleError, match="not a plain pinned lock"):
        bundle.pins(lock)
