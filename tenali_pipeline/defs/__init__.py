"""Dagster definitions, one folder per stage of the asset graph (named as the graph names it)."""
