"""The analysts' KPI dashboard (Streamlit): ``make dashboard`` serves ``dashboard/app.py``."""
