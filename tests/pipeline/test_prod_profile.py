"""The prod profile's storage for real: the whole graph with its lake on S3 (moto's server on
127.0.0.1) and its Dagster instance on Postgres (pgserver), from infra/dagster.prod.yaml."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from tenali_pipeline.definitions import build_definitions
from tenali_pipeline.lake import Lake
from tenali_pipeline.launchers import LocalTorchrunLauncher
from tenali_pipeline.resources import TrainingResource
from tenali_pipeline.settings import load_settings

from launcher_fakes import BUCKET, s3  # noqa: F401  (the moto S3 server on 127.0.0.1, shared with the launcher tests)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def postgres(tmp_path, monkeypatch):
    pgserver = pytest.importorskip("pgserver", reason="pgserver runs PostgreSQL from a wheel: pip install pgserver")
    pytest.importorskip("dagster_postgres")
    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    # dagster-postgres ships psycopg2; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
    monkeypatch.setenv("DAGSTER_PG_URL", server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1))
    yield server
    server.cleanup()


def test_prod_profile_runs_on_s3_and_postgres(tmp_path, s3, postgres):
    endpoint, client = s3
    settings = load_settings({
        "TENALI_PROFILE": "prod", "TENALI_HOME": str(tmp_path), "TENALI_LAKE_ROOT": f"s3://{BUCKET}/lake",
        "TENALI_S3_ENDPOINT_URL": endpoint, "TENALI_SOURCES": "sample", "TENALI_LAUNCHER": "local",
        "TENALI_VOCAB_SIZE": "800", "TENALI_INSTRUMENT_BUCKETS": "2", "TENALI_START_DATE": "2010-01-01",
    })
    assert settings.profile == "prod" and settings.lake_root.startswith("s3://")
    defs = build_definitions(
        settings,
        training=TrainingResource(model="tiny", steps=40, batch_size=8, seq_len=64, eval_every=0, eval_batches=2,
                                  ckpt_every=0),
        launcher=LocalTorchrunLauncher(nproc_per_node=1),
    )
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(ROOT / "infra" / "dagster.prod.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        # Sources to the pretraining evaluation: every kind of lake read and write (tables, folders, the
        # launched trainer's checkpoint upload). Post-training stages use the same lake calls and are
        # covered end to end on the local profile (test_end_to_end.py).
        graph = defs.resolve_asset_graph()
        selection = dg.AssetSelection.assets("pretrain_evaluation").upstream().resolve(graph)
        # The per-instrument sources are in 2 buckets: what they need first, then each bucket (as a
        # backfill would); the on-chain sources are daily: two days of the sample as one backfill run
        # (two months took 18 s more and covered nothing a second day does not);
        # then everything downstream, which reads both buckets and every day from S3.
        def partitioned_by(kind):
            return {k for k in selection if isinstance(graph.get(k).partitions_def, kind)}

        partitioned, daily = partitioned_by(dg.StaticPartitionsDefinition), partitioned_by(dg.DailyPartitionsDefinition)
        before = {k for k in dg.AssetSelection.assets(*partitioned).upstream().resolve(graph) if k not in partitioned}
        job = defs.resolve_implicit_global_asset_job_def()
        runs = [(job, dict(asset_selection=sorted(before)))]
        runs += [(job, dict(asset_selection=sorted(partitioned), partition_key=key)) for key in ("00", "01")]
        runs += [(defs.resolve_job_def("ingest_onchain"), dict(tags={
            "dagster/asset_partition_range_start": "2012-07-30", "dagster/asset_partition_range_end": "2012-07-31"}))]
        runs += [(job, dict(asset_selection=sorted(selection - partitioned - daily - before)))]
        for run_job, run in runs:
            result = run_job.execute_in_process(instance=instance, raise_on_error=False, **run)
            assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
        assert len(partitioned) == 6 and len(daily) == 4
        for key in selection:
            assert instance.get_latest_materialization_event(key) is not None, key
    finally:
        instance.dispose()

    keys = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])}
    assert {"lake/corpus/train.parquet", "lake/tokenizer/tenali.model", "lake/shards/manifest.json",
            "lake/clean/market/market_prices/bucket-00-of-02.parquet",
            "lake/clean/market/market_prices/bucket-01-of-02.parquet",
            "lake/clean/defillama/defi_metrics/2012-07-30.parquet",
            "lake/clean/coingecko/coin_markets/2012-07-31.parquet"} <= keys
    lake = Lake(f"s3://{BUCKET}/lake", s3_endpoint_url=endpoint)
    latest = lake.read_json("checkpoints/pretrain/LATEST.json")
    assert latest["checkpoint"].startswith(f"s3://{BUCKET}/lake/checkpoints/pretrain/")
    assert f"lake/{latest['checkpoint_key']}/model.safetensors" in keys
    assert not (tmp_path / "lake").exists()  # nothing went to a local lake by mistake
