"""What the pipeline reads from the dbt project's manifest: the KPI marts and their relations.

The mart list has one source, the dbt project: models tagged ``kpi``. Relations come from the
manifest as ``schema.alias``, so they follow the target's schema names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loaders.config import ConfigError
from loaders.errors import one_line

KPI_TAG = "kpi"
REJECTS_MODEL = "fct_rejected_listens"


@dataclass(frozen=True)
class Mart:
    """A model the pipeline reports on: its name, its relation and its preview settings."""

    name: str
    relation: str  # schema.alias
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def load_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``; ConfigError when there is none."""
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no dbt manifest at {path}: run dbt or `make manifest` first") from None
    return data


def _models(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        node for node in manifest.get("nodes", {}).values() if node.get("resource_type") == "model"
    ]


def _mart(node: dict[str, Any]) -> Mart:
    alias = node.get("alias") or node["name"]
    meta = (node.get("config") or {}).get("meta") or node.get("meta") or {}
    return Mart(name=node["name"], relation=f"{node['schema']}.{alias}", meta=meta)


def kpi_marts(manifest: dict[str, Any]) -> tuple[Mart, ...]:
    """The KPI marts (models tagged ``kpi``), by name."""
    marts = [_mart(node) for node in _models(manifest) if KPI_TAG in (node.get("tags") or ())]
    return tuple(sorted(marts, key=lambda mart: mart.name))


def model(manifest: dict[str, Any], name: str) -> Mart | None:
    """The model called ``name``, if the project has it."""
    return next((_mart(node) for node in _models(manifest) if node["name"] == name), None)


def failed_nodes(run_results: dict[str, Any]) -> list[str]:
    """``name: message`` for each node that errored or failed in dbt's run_results.json, e.g.
    ``unique_dim_users_user_id: Got 3 results, configured to fail if != 0``."""
    out = []
    for result in run_results.get("results", []):
        if result.get("status") in ("error", "fail", "runtime error"):
            parts = str(result.get("unique_id", "?")).split(".")  # type.package.name[.hash]
            name = parts[2] if len(parts) > 2 else parts[-1]
            out.append(f"{name}: {one_line(str(result.get('message') or result['status']))}"[:300])
    return out
