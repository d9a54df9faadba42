"""Stand-in for dbt's `adapter` object for sqlfluff's jinja templater."""


def get_relation(database: object = None, schema: object = None, identifier: str = "") -> str:
    return f"marts.{identifier}"
