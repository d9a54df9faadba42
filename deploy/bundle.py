"""Assemble what an Airflow deployment installs for one dbt target (``make bundle TARGET=...``).

    python deploy/bundle.py --target redshift --manifest M --wheel W --lock L --out DIR

writes into DIR (emptied first):

- ``requirements.txt``: ``music-elt[airflow]`` from ``wheels/``, within ``constraints.txt``
  (pip and uv read both references relative to the file);
- ``constraints.txt``: every pin of the ``airflow`` lock, the set the tests ran with;
- ``excludes.txt``: what the lock leaves out (dbt's opt-in v2 parser, whose build downloads a
  binary), for an offline ``uv pip install --excludes``;
- ``wheels/``: the package wheel;
- ``dags/``: the DAG file, its ``.airflowignore`` and ``dbt_project/`` with the manifest parsed
  for the target at ``dbt_project/target/airflow/manifest.json`` (where the DAG looks);
- ``Dockerfile``: an image for the official Helm chart (or any Docker-based Airflow);
- ``mwaa/``: ``requirements.txt``, ``plugins.zip`` and ``startup.sh`` laid out for Amazon MWAA;
- ``bundle.json``: the target, the package version, the manifest's adapter and dbt version.

A manifest parsed for another adapter is refused: the DAG renders its tasks from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("duckdb", "postgres", "redshift")
# what never ships with the dbt project: build output, logs, local state
PROJECT_IGNORE = shutil.ignore_patterns(
    "target",
    "logs",
    "dbt_packages",
    ".user.yml",
    ".sqlfluff*",
    "*.duckdb",
    "*.duckdb.wal",
    "__pycache__",
)
MWAA_PLUGINS = "/usr/local/airflow/plugins"  # where MWAA unpacks plugins.zip
AIRFLOW_IMAGE = "apache/airflow:{airflow}-python3.11"
DOCKERFILE = """\
# The Airflow image for the official Helm chart (or any Docker-based Airflow 3): the bundle's
# package set on the official image of the Airflow version it pins, and the DAG folder.
#   docker build -t music-elt-airflow:{version}-{target} .
ARG BASE={image}
FROM ${{BASE}}
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/music-elt/
COPY --chown=airflow:0 wheels/ /opt/music-elt/wheels/
RUN pip install --no-cache-dir -r /opt/music-elt/requirements.txt
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
"""


MWAA_STARTUP = """\
#!/bin/sh
# Amazon MWAA startup script: what the DAG reads when it is parsed (dags/README.md). Secrets and
# endpoints are not set here: they come from Airflow connections.
export MUSIC_ELT_TARGET={target}
export MUSIC_ELT_LANDING=s3://CHANGE-ME-bucket/music
export AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
"""


class BundleError(Exception):
    """The inputs cannot make a bundle; the message says why."""


def pins(lock: Path) -> list[str]:
    """``name==version`` of every package of a uv/pip-compile lock, comments dropped."""
    lines = [line.split("#", 1)[0].strip() for line in lock.read_text().splitlines()]
    found = [line for line in lines if line]
    odd = [line for line in found if "==" not in line or line.startswith("-")]
    if odd:
        raise BundleError(f"{lock}: not a plain pinned lock (e.g. {odd[0]!r})")
    return found


def check_manifest(manifest: Path, target: str) -> dict[str, str]:
    """The manifest's metadata; BundleError unless dbt parsed it for ``target``'s adapter."""
    try:
        metadata = json.loads(manifest.read_text())["metadata"]
    except FileNotFoundError:
        raise BundleError(
            f"no manifest at {manifest}: run `make manifest DBT_TARGET={target}`"
        ) from None
    adapter = metadata.get("adapter_type")
    if adapter != target:
        raise BundleError(f"{manifest} was parsed for {adapter!r}, not for the {target} target")
    return {"adapter_type": adapter, "dbt_version": metadata.get("dbt_version", "")}


def build(target: str, manifest: Path, wheel: Path, lock: Path, out: Path) -> Path:
    """Write the bundle into ``out`` (replacing it); returns ``out``."""
    if target not in TARGETS:
        raise BundleError(f"TARGET={target!r}: choose one of {', '.join(TARGETS)}")
    metadata = check_manifest(manifest, target)
    constraints = pins(lock)
    name, version = wheel.name.split("-")[:2]
    airflow = next(p.split("==")[1] for p in constraints if p.startswith("apache-airflow=="))
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    shutil.copy2(wheel, out / "wheels" / wheel.name)

    dags = out / "dags"
    dags.mkdir()
    for name_ in ("music_streaming_pipeline.py", ".airflowignore"):
        shutil.copy2(REPO / "dags" / name_, dags / name_)
    project = dags / "dbt_project"
    shutil.copytree(REPO / "dbt_project", project, ignore=PROJECT_IGNORE)
    (project / "target" / "airflow").mkdir(parents=True)
    shutil.copy2(manifest, project / "target" / "airflow" / "manifest.json")

    head = f"# music-elt {version} for Airflow {airflow} (Python 3.11), dbt target {target}"
    (out / "constraints.txt").write_text(
        f"{head}: the pinned set the tests ran with\n" + "\n".join(constraints) + "\n"
    )
    shutil.copy2(REPO / "requirements" / "excludes.txt", out / "excludes.txt")
    requirement = f"{name.replace('_', '-')}[airflow]=={version}"
    (out / "requirements.txt").write_text(
        f"{head}\n# pip install -r requirements.txt (paths below are relative to this file);\n"
        "# offline: uv pip install --compile-bytecode --excludes excludes.txt -r requirements.txt\n"
        f"--find-links wheels\n-c constraints.txt\n{requirement}\n"
    )
    (out / "Dockerfile").write_text(
        DOCKERFILE.format(
            version=version, target=target, image=AIRFLOW_IMAGE.format(airflow=airflow)
        )
    )

    mwaa = out / "mwaa"
    mwaa.mkdir()
    with zipfile.ZipFile(mwaa / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as plugins:
        plugins.write(wheel, f"wheels/{wheel.name}")
        plugins.write(out / "constraints.txt", "constraints.txt")
    (mwaa / "requirements.txt").write_text(
        f"{head}\n# Amazon MWAA: plugins.zip unpacks into {MWAA_PLUGINS}\n"
        f"--find-links {MWAA_PLUGINS}/wheels\n--constraint {MWAA_PLUGINS}/constraints.txt\n"
        f"{requirement}\n"
    )
    (mwaa / "startup.sh").write_text(MWAA_STARTUP.format(target=target))
    (out / "bundle.json").write_text(
        json.dumps(
            {"target": target, "package": f"{name}=={version}", "airflow": airflow, **metadata},
            indent=2,
        )
        + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help=" | ".join(TARGETS))
    parser.add_argument("--manifest", type=Path, required=True, help="dbt parse's manifest.json")
    parser.add_argument("--wheel", type=Path, required=True, help="the music-elt wheel")
    parser.add_argument("--lock", type=Path, default=REPO / "requirements" / "airflow.lock")
    parser.add_argument("--out", type=Path, required=True, help="the bundle folder (replaced)")
    args = parser.parse_args(argv)
    try:
        out = build(args.target, args.manifest, args.wheel, args.lock, args.out)
    except BundleError as exc:
        print(f"make bundle: {exc}", file=sys.stderr)
        return 2
    print(f"bundle for {args.target}: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
