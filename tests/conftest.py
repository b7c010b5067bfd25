import os

# Tests never read the developer's own settings or instance.
for name in list(os.environ):
    if name.startswith("TENALI_") or name in ("DAGSTER_HOME", "FRED_API_KEY", "SEC_EDGAR_IDENTITY"):
        del os.environ[name]
# ...but a failed training step retries after one second, not the 60 s a cluster gets (settings.py):
# the preemption test (test_end_to_end.py) waits through it. Read when the training assets are defined.
os.environ["TENALI_TRAINING_RETRY_DELAY"] = "1"


import pytest  # noqa: E402


@pytest.fixture
def materialize_sample(tmp_path):
    """Materialise source definitions (raw, clean and their checks) and the named document assets on the
    sample clients in a lake under tmp_path, asserting that the run succeeds and every check passes.
    Returns (result, lake, assets, resources) so a test can read the lake or run again."""

    def run(made: list, documents: tuple[str, ...] = ()):
        import dagster as dg

        from tenali_pipeline.defs.corpus.assets import DOCUMENT_ASSETS
        from tenali_pipeline.lake import Lake
        from tenali_pipeline.resources import LakeResource, SourcesResource

        docs = [a for a in DOCUMENT_ASSETS if a.key.path[-1] in documents]
        assets = [a for a in made if not isinstance(a, dg.AssetChecksDefinition)] + docs
        checks = [c for c in made if isinstance(c, dg.AssetChecksDefinition)]
        resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "sources": SourcesResource()}
        result = dg.materialize([*assets, *checks], resources=resources)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
        return result, Lake(str(tmp_path / "lake")), assets, resources

    return run
