"""The ``music-elt`` command line: generate, seed, run, demo, check.

Every command keeps the embedded stack's state under one work directory (``--workdir``,
default ``.music-elt/``): the RDS stand-in's data, the landing zone and the DuckDB warehouse.
The same commands drive real services through the environment variables in the README.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaders import pipeline, rds
from loaders.config import Settings
from loaders.console import console
from loaders.dbt import run_dbt
from loaders.docs_site import docs_freshness
from loaders.errors import DbtFailed, Interrupted, PipelineError, Terminated, note_signal
from loaders.serving import PUBLISHED_SCHEMA, kpi_marts


def embedded_server(pgdata: Path) -> Any:
    """The embedded RDS stand-in (demo tooling, imported when a run without
    ``MUSIC_ELT_RDS_DSN`` connects): :func:`loaders.demo.embedded.embedded_server`."""
    from loaders.demo.embedded import embedded_server as start

    return start(pgdata)


# The CLI, the top of the package, hands the embedded stand-in to the loaders below it (they
# never import the demo stack).
rds.serve_embedded(embedded_server)


def _say(message: str) -> None:
    console.say(message)


def _say_warnings(summary: pipeline.RunSummary) -> None:
    """One line per warning of the run (a re-delivered file that could not be loaded; a dbt
    warn-level test, whose rows are kept by design): what, where to look."""
    for warning in summary.warnings():
        _say(f"  warn: {warning}")


def cmd_generate(args: argparse.Namespace) -> None:
    from loaders.demo.generate import generate

    started = time.perf_counter()
    summary = generate(
        Path(args.out), streams=args.streams, days=args.days, seed=args.seed, progress=_say
    )
    _say(
        f"wrote {summary.out_dir}: {summary.users:,} users, {summary.song_rows:,} song rows "
        f"({summary.songs:,} tracks), {summary.stream_rows:,} stream rows in "
        f"{summary.stream_files} files, in {time.perf_counter() - started:.1f}s"
    )


def seed(settings: Settings, from_dir: Path, *, replace_source_tables: bool = False) -> None:
    """``music-elt seed``: :func:`loaders.demo.seed.seed` with the CLI's progress lines."""
    from loaders.demo.seed import seed as seed_source

    seed_source(settings, from_dir, replace_source_tables=replace_source_tables, progress=_say)


def cmd_seed(args: argparse.Namespace) -> None:
    seed(_settings(args), Path(args.from_dir), replace_source_tables=args.replace_source_tables)


def cmd_run(args: argparse.Namespace) -> None:
    settings = _settings(args)
    summary = pipeline.run(settings, progress=_say, force_build=args.build)
    for line in summary.lines():
        _say(line)
    _say_warnings(summary)


def cmd_demo(args: argparse.Namespace) -> None:
    settings = _settings(args)
    if args.from_dir:
        source = Path(args.from_dir)
    else:
        from loaders.demo.generate import generate

        source = settings.workdir / "generated"
        if not (source / "users.csv").is_file():
            _say(f"==> generate {args.streams:,} plays into {source}")
            generate(source, streams=args.streams, days=args.days, seed=args.seed, progress=_say)
    seed(settings, source)
    summary = pipeline.run(settings, progress=_say)
    if not docs_freshness(settings).current:  # a run that built nothing leaves them current
        _say("==> dbt docs generate")
        run_dbt(settings, ["docs", "generate"])
    _say("")
    for line in summary.lines():
        _say(line)
    _say_warnings(summary)
    show_marts(settings)
    _say(
        "\ndbt docs site (models, tests, lineage, KPI definitions): "
        f"make docs WORKDIR={settings.workdir}, then http://127.0.0.1:8081"
    )


def cmd_check(args: argparse.Namespace) -> int:
    from loaders import check

    return check.main(_settings(args), say=_say)


def show_marts(settings: Settings) -> None:
    """Print the top rows of each KPI mart (the models tagged ``kpi``, previewed as their dbt
    ``meta.preview`` says)."""
    from loaders.warehouse import open_warehouse

    with open_warehouse(settings) as wh:
        for mart in kpi_marts(settings):
            preview = mart.meta.get("preview") or {}
            names, rows = wh.preview(  # a few rows each: the demo fits on one screen
                mart.relation,
                columns=preview.get("columns", ()),
                order_by=preview.get("order_by", ""),
                latest=preview.get("latest", ""),
                limit=3,
            )
            _say(f"\n{PUBLISHED_SCHEMA}.{mart.name}")
            _say(_table(names, rows))


def _table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        text = "" if value is None else str(value)
        return text if len(text) <= 28 else text[:27] + "…"

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(workdir=Path(args.workdir) if args.workdir else None)


def version() -> str:
    """``music-elt <version> (dbt-core <version>, Python <version>)``."""
    from importlib.metadata import version as installed

    return (
        f"music-elt {installed('music-elt')} (dbt-core {installed('dbt-core')}, "
        f"Python {sys.version.split()[0]})"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="music-elt",
        description="Music streaming ELT: RDS + S3 -> warehouse -> dbt KPI marts.",
    )
    top.add_argument("--version", action="version", version=version())
    sub = top.add_subparsers(dest="command", required=True)

    def with_workdir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--workdir",
            help="state of the embedded stack (default: $MUSIC_ELT_WORKDIR or .music-elt)",
        )
        return p

    def with_sizes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--streams", type=int, default=100_000, help="plays (default 100000)")
        p.add_argument("--days", type=int, default=7, help="days of plays (default 7)")
        p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")

    g = sub.add_parser("generate", help="write realistic users.csv, songs.csv and streams/")
    g.add_argument("--out", required=True, help="directory to write into")
    with_sizes(g)
    g.set_defaults(func=cmd_generate)

    s = with_workdir(sub.add_parser("seed", help="load a data directory into the RDS and landing"))
    s.add_argument(
        "--from-dir", required=True, help="directory with users.csv, songs.csv, streams/"
    )
    s.add_argument(
        "--replace-source-tables",
        action="store_true",
        help="allow seeding the database MUSIC_ELT_RDS_DSN names (its tables are replaced)",
    )
    s.set_defaults(func=cmd_seed)

    r = with_workdir(
        sub.add_parser("run", help="one pipeline run: extract, load, dbt build, archive")
    )
    r.add_argument("--build", action="store_true", help="run dbt build even when nothing is new")
    r.set_defaults(func=cmd_run)

    d = with_workdir(
        sub.add_parser("demo", help="generate (or take --from-dir), seed, run, show KPIs")
    )
    d.add_argument("--from-dir", help="use this data directory instead of generating one")
    with_sizes(d)
    d.set_defaults(func=cmd_demo)

    c = with_workdir(
        sub.add_parser(
            "check",
            help="check the warehouse, its privileges, the reader role and the landing zone "
            "(changes nothing; exit 1 when a run would fail)",
        )
    )
    c.set_defaults(func=cmd_check)
    return top


def _terminate(signum: int, frame: Any) -> None:
    note_signal("SIGTERM")
    raise Terminated()


# A stopped command exits as a shell reports a process a signal ended: 128 + the signal's number.
SIGNAL_EXIT_CODES = {"Ctrl-C": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}  # 130, 143
# What ends a command with a one-line message instead of a traceback.
EXPECTED_ERRORS = (
    PipelineError,
    ConnectionError,
    FileNotFoundError,
    Interrupted,
    KeyboardInterrupt,
)


def failure(exc: BaseException) -> tuple[int, list[str]]:
    """The exit code of a command that ``exc`` ended, and the lines it prints on stderr: 1 when
    the dbt build failed (nothing archived or published: what to do next), 2 for any other
    error (a setting, a service, a lock held: the one line says which), 130 on Ctrl-C and 143 on
    SIGTERM (with the step and the state the run left, when a step was running)."""
    if isinstance(exc, Interrupted):
        return SIGNAL_EXIT_CODES[exc.signal_name], [str(exc)]
    if isinstance(exc, KeyboardInterrupt):
        name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        return SIGNAL_EXIT_CODES[name], [f"interrupted by {name}"]
    if isinstance(exc, DbtFailed):
        return 1, [str(exc), f"nothing was archived or published; {exc.hint}"]
    return 2, [f"error: {exc}"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = args.func(args)
    except EXPECTED_ERRORS as exc:
        code, lines = failure(exc)
        for line in lines:
            print(f"music-elt: {line}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
