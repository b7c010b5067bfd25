import os

# Tests never read the developer's own settings or instance.
for name in list(os.environ):
    if name.startswith("TENALI_") or name in ("DAGSTER_HOME", "FRED_API_KEY", "SEC_EDGAR_IDENTITY"):
        del os.environ[name]
