"""Draw the DAG's task graph from the DAG itself: a Mermaid block in dags/README.md and, when
Graphviz's ``dot`` is installed, dags/docs/music_streaming_pipeline.png.

    make manifest && .venv/bin/python dags/docs/render_graph.py

It parses the DAG folder like the scheduler does (the manifest must exist), so the picture
always matches the code and the dbt project. This folder is in dags/.airflowignore.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
DAGS = DOCS.parent
README = DAGS / "README.md"
PNG = DOCS / "music_streaming_pipeline.png"
START, END = "<!-- dag-graph:start -->", "<!-- dag-graph:end -->"


def _load_dag() -> Any:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="render-graph-"))
    os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    if bag.import_errors:
        raise SystemExit(f"the DAG does not parse: {bag.import_errors}")
    return bag.dags["music_streaming_pipeline"]


def _label(task: Any) -> str:
    kind = type(task).__name__
    name = task.task_id.removeprefix("dbt.")
    if "Mapped" in kind:
        return f"{name} [mapped]"
    return name


def _node_id(task_id: str) -> str:
    return re.sub(r"\W", "_", task_id)


def mermaid(dag: Any) -> str:
    """A Mermaid flowchart: plain tasks, the dbt group as a subgraph."""
    lines = ["```mermaid", "flowchart LR"]
    dbt = [t for t in dag.tasks if t.task_id.startswith("dbt.")]
    for task in dag.tasks:
        if task not in dbt:
            lines.append(f'    {_node_id(task.task_id)}["{_label(task)}"]')
    lines.append('    subgraph dbt["dbt: Cosmos watcher, one build, a task per model + tests"]')
    lines.append("    direction LR")
    for task in dbt:
        lines.append(f'        {_node_id(task.task_id)}["{_label(task)}"]')
    lines.append("    end")
    for task in sorted(dag.tasks, key=lambda t: t.task_id):
        for downstream in sorted(task.downstream_task_ids):
            lines.append(f"    {_node_id(task.task_id)} --> {_node_id(downstream)}")
    lines.append("```")
    return "\n".join(lines)


def dot(dag: Any) -> str:
    """The same graph in Graphviz's language."""
    out = [
        "digraph music_streaming_pipeline {",
        '  rankdir=LR; node [shape=box, style="rounded,filled", fontname="Helvetica", '
        'fontsize=10, fillcolor="#e8f0fe"];',
        '  subgraph cluster_dbt { label="dbt (Cosmos watcher): one dbt build, '
        'then a task per model and its tests";'
        ' style=rounded; color="#999999"; fontname="Helvetica";',
    ]
    for task in dag.tasks:
        if task.task_id.startswith("dbt."):
            color = "#fde7e9" if "Test" in type(task).__name__ else "#fff4d6"
            out.append(f'    "{task.task_id}" [label="{_label(task)}", fillcolor="{color}"];')
    out.append("  }")
    for task in dag.tasks:
        if not task.task_id.startswith("dbt."):
            out.append(f'  "{task.task_id}" [label="{_label(task)}"];')
    for task in dag.tasks:
        for downstream in sorted(task.downstream_task_ids):
            out.append(f'  "{task.task_id}" -> "{downstream}";')
    out.append("}")
    return "\n".join(out)


def main() -> None:
    dag = _load_dag()
    text = README.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{START}\n{mermaid(dag)}\n{END}{tail}")
        print(f"updated the graph in {README}")
    if shutil.which("dot"):
        subprocess.run(
            ["dot", "-Tpng", "-Gdpi=80", "-o", str(PNG)], input=dot(dag).encode(), check=True
        )
        print(f"wrote {PNG}")
    else:
        print("Graphviz's dot is not installed: PNG not drawn", file=sys.stderr)


if __name__ == "__main__":
    main()
