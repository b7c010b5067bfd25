"""Text stages: rendering structured data into documents, filtering, dedup and splits; no Dagster."""
