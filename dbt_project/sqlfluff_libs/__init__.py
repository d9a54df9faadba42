"""Stand-ins for the project's macros, used only by sqlfluff's jinja templater.

The real macros (macros/) dispatch on the warehouse adapter, which exists only inside dbt. These
functions render SQL of the same shape, so `sqlfluff lint models macros` checks the models'
own SQL. Keep the names and signatures in step with macros/.
"""


def blank_to_null(expression: str) -> str:
    return f"nullif(trim({expression}), '')"


def parse_bigint(text_expression: str) -> str:
    return f"cast({text_expression} as bigint)"


def parse_timestamp_utc(text_expression: str, allow_date_only: bool = False) -> str:
    return f"cast({text_expression} as timestamp)"


def binary_text_order(expression: str) -> str:
    return f"collate({expression}, 'case_sensitive')"


def split_part_at(text_expression: str, delimiter: str, part_number_expression: str) -> str:
    return f"split_part({text_expression}, '{delimiter}', {part_number_expression})"


def stale_periods(period: str, plays: str, stored: object = None) -> str:
    return f"select {period} from {plays}"


def sibling_relation(identifier: str) -> str:
    return identifier
