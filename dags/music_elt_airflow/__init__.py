"""What an Airflow deployment of music-elt needs beside the loaders: settings from Airflow
connections, the Cosmos configuration of the dbt task group, and failure alerts through the
Slack and PagerDuty providers. The DAG file only wires these together; the loaders package
never imports Airflow.
"""
