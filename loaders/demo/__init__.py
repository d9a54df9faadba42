"""The embedded demo stack, kept apart from the production loaders.

- :mod:`loaders.demo.generate`: deterministic, realistic source data (users, songs, streams).
- :mod:`loaders.demo.embedded`: the RDS stand-in, a PostgreSQL server from the ``pgserver``
  wheel (the ``embedded`` extra: ``pip install 'music-elt[embedded]'``).
- :mod:`loaders.demo.seed`: fill a source database and the landing zone from a data directory.

This package imports ``loaders``; ``loaders`` never imports it but in its CLI, and only when
called, so a production run (``music-elt run``, the DAG) neither loads it nor needs its
dependencies. The CLI's ``generate``, ``seed`` and ``demo`` commands import it, and with no
``MUSIC_ELT_RDS_DSN`` the CLI and the DAG hand the RDS stand-in to ``loaders.rds``
(``serve_embedded``).
"""
