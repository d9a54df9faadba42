"""Packaging for Airflow deployments (``make bundle``); not part of the installed package."""
