"""Stand-ins for dbt's cross-database macros (`dbt.<name>`) for sqlfluff's jinja templater."""


def dateadd(datepart: str, interval: object, from_date_or_timestamp: str) -> str:
    return f"dateadd({datepart}, {interval}, {from_date_or_timestamp})"


def date_trunc(datepart: str, date: str) -> str:
    return f"date_trunc('{datepart}', {date})"
