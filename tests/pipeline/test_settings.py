"""Settings: profile defaults, validation, list parsing, and the documentation of every variable."""

import re
from pathlib import Path

import pytest

import tenali_pipeline.settings as settings_module
from tenali_pipeline.settings import DEFAULT_FEEDS, VARIABLES, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_demo_defaults(tmp_path):
    s = load_settings({"TENALI_HOME": str(tmp_path)})
    assert s.profile == "demo"
    assert s.home == tmp_path
    assert s.lake_root == str(tmp_path / "lake")
    assert s.documents_root == str(tmp_path / "documents")
    assert s.sources == "sample"
    assert s.launcher == "local"
    assert s.model == "demo"
    assert (s.vocab_size, s.shard_tokens, s.train_steps, s.train_nproc) == (4096, 1 << 20, 300, 0)
    assert s.tickers == ("AAPL", "MSFT", "IBM", "GOOG", "FB")
    assert s.fred_series == ("GDPC1", "CPIAUCSL", "UNRATE", "FEDFUNDS", "DGS10", "M1SL")
    assert s.crypto_symbols == ("BTC/USD", "ETH/USD")
    assert s.news_feeds == DEFAULT_FEEDS
    assert s.val_start == "" and s.s3_endpoint_url == ""


def test_home_defaults_to_var_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.home == tmp_path / "var"
    assert s.lake_root == str(tmp_path / "var" / "lake")


def test_local_defaults(tmp_path):
    s = load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path)})
    assert s.profile == "local"
    assert s.lake_root == str(tmp_path / "lake")
    assert s.sources == "live"
    assert s.launcher == "local"
    assert s.model == "51m"
    assert (s.vocab_size, s.shard_tokens, s.train_steps) == (50_000, 100_000_000, 20_000)


def test_prod_defaults_with_an_s3_lake(tmp_path):
    s = load_settings({"TENALI_PROFILE": "prod", "TENALI_HOME": str(tmp_path),
                       "TENALI_LAKE_ROOT": "s3://bucket/tenali", "TENALI_S3_ENDPOINT_URL": "http://minio:9000"})
    assert s.lake_root == "s3://bucket/tenali"
    assert s.s3_endpoint_url == "http://minio:9000"
    assert s.sources == "live"
    assert s.launcher == "k8s"
    assert s.model == "51m"
    assert s.vocab_size == 50_000


@pytest.mark.parametrize("lake", [None, "", "/data/lake", "var/lake", "gs://bucket/x"])
def test_prod_requires_an_s3_lake(tmp_path, lake):
    env = {"TENALI_PROFILE": "prod", "TENALI_HOME": str(tmp_path)}
    if lake is not None:
        env["TENALI_LAKE_ROOT"] = lake
    with pytest.raises(SettingsError, match="TENALI_LAKE_ROOT"):
        load_settings(env)


def test_local_profile_accepts_a_folder_lake(tmp_path):
    s = load_settings({"TENALI_PROFILE": "local", "TENALI_LAKE_ROOT": str(tmp_path / "elsewhere")})
    assert s.lake_root == str(tmp_path / "elsewhere")


@pytest.mark.parametrize("profile", ["production", "Demo", "dev"])
def test_unknown_profile_is_rejected(profile):
    with pytest.raises(SettingsError, match="TENALI_PROFILE") as e:
        load_settings({"TENALI_PROFILE": profile})
    assert repr(profile) in str(e.value)


@pytest.mark.parametrize("name", ["TENALI_VOCAB_SIZE", "TENALI_SHARD_TOKENS", "TENALI_TRAIN_STEPS", "TENALI_TRAIN_NPROC"])
def test_bad_integer_names_the_variable(name):
    with pytest.raises(SettingsError, match=name) as e:
        load_settings({name: "12k"})
    assert "'12k'" in str(e.value)


def test_integers_and_strings_override_the_profile(tmp_path):
    s = load_settings({"TENALI_HOME": str(tmp_path), "TENALI_VOCAB_SIZE": " 1024 ", "TENALI_SHARD_TOKENS": "60000",
                       "TENALI_TRAIN_STEPS": "7", "TENALI_TRAIN_NPROC": "2", "TENALI_MODEL": "tiny",
                       "TENALI_SOURCES": "live", "TENALI_VAL_START": "2012-01-01", "TENALI_START_DATE": "2020-01-01",
                       "TENALI_CRYPTO_EXCHANGE": "binance", "TENALI_DOCUMENTS_ROOT": "s3://docs/x"})
    assert (s.vocab_size, s.shard_tokens, s.train_steps, s.train_nproc) == (1024, 60000, 7, 2)
    assert (s.model, s.sources, s.val_start, s.start_date) == ("tiny", "live", "2012-01-01", "2020-01-01")
    assert (s.crypto_exchange, s.documents_root) == ("binance", "s3://docs/x")


def test_csv_lists_are_split_and_stripped():
    s = load_settings({"TENALI_TICKERS": " NVDA, AMD ,,INTC, ", "TENALI_FRED_SERIES": "GDP",
                       "TENALI_CRYPTO_SYMBOLS": "BTC/EUR,ETH/EUR",
                       "TENALI_NEWS_FEEDS": "https://a.example/rss, https://b.example/atom"})
    assert s.tickers == ("NVDA", "AMD", "INTC")
    assert s.fred_series == ("GDP",)
    assert s.crypto_symbols == ("BTC/EUR", "ETH/EUR")
    assert s.news_feeds == ("https://a.example/rss", "https://b.example/atom")


def test_empty_or_blank_values_fall_back_to_defaults():
    s = load_settings({"TENALI_TICKERS": " , ", "TENALI_VOCAB_SIZE": "  ", "TENALI_PROFILE": " "})
    assert s.profile == "demo"
    assert s.tickers == ("AAPL", "MSFT", "IBM", "GOOG", "FB")
    assert s.vocab_size == 4096


@pytest.mark.parametrize(("name", "value"), [("TENALI_SOURCES", "both"), ("TENALI_LAUNCHER", "slurm")])
def test_bad_choices_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize("value", ["soon", "-5", "nan", "inf"])
def test_a_bad_training_retry_delay_names_the_variable(value):
    with pytest.raises(SettingsError, match="TENALI_TRAINING_RETRY_DELAY") as e:
        load_settings({"TENALI_TRAINING_RETRY_DELAY": value})
    assert repr(value) in str(e.value)


def test_training_retry_delay():
    assert load_settings({}).training_retry_delay == 60
    assert load_settings({"TENALI_TRAINING_RETRY_DELAY": " 0 "}).training_retry_delay == 0
    assert settings_module.training_retry_delay({"TENALI_TRAINING_RETRY_DELAY": "300.5"}) == 300.5


def test_reads_os_environ_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TENALI_HOME", str(tmp_path))
    monkeypatch.setenv("TENALI_TICKERS", "XYZ")
    s = load_settings()
    assert s.home == tmp_path and s.tickers == ("XYZ",)


def test_variables_document_every_name_settings_reads():
    source = Path(settings_module.__file__).read_text()
    used = set(re.findall(r"TENALI_[A-Z0-9_]+", source))
    assert len(used) >= 19  # sanity: the grep finds them
    assert used <= set(VARIABLES), sorted(used - set(VARIABLES))
    # and nothing documented is dead: every TENALI_ variable is read by load_settings
    assert {v for v in VARIABLES if v.startswith("TENALI_")} <= used
    for name, (meaning, default) in VARIABLES.items():
        assert meaning.strip(), name


def _readme_variables() -> set[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variable |"))
    names = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        first_cell = line.split("|")[1]
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_readme_table_and_variables_agree():
    readme = _readme_variables()
    assert {"TENALI_PROFILE", "TENALI_CRYPTO_EXCHANGE", "TENALI_CRYPTO_SYMBOLS", "DAGSTER_HOME"} <= readme
    assert readme <= set(VARIABLES), sorted(readme - set(VARIABLES))
    assert set(VARIABLES) <= readme, sorted(set(VARIABLES) - readme)


@pytest.mark.parametrize("name", ["TENALI_VAL_START", "TENALI_START_DATE"])
@pytest.mark.parametrize("value", ["2012/01/01", "2012-13-01", "last year"])
def test_bad_date_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name) as e:
        load_settings({name: value})
    assert repr(value) in str(e.value)


def test_documented_defaults_match_the_profiles(tmp_path):
    """The defaults `tenali info -v` prints are the ones load_settings applies, for demo and otherwise."""
    demo = load_settings({"TENALI_HOME": str(tmp_path)})
    local = load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path)})
    fields = {"TENALI_VOCAB_SIZE": "vocab_size", "TENALI_SHARD_TOKENS": "shard_tokens", "TENALI_MODEL": "model",
              "TENALI_TRAIN_STEPS": "train_steps", "TENALI_TRAIN_NPROC": "train_nproc",
              "TENALI_START_DATE": "start_date", "TENALI_CRYPTO_EXCHANGE": "crypto_exchange"}
    for name, attr in fields.items():
        documented = VARIABLES[name][1]
        for s in (demo, local):
            assert re.search(rf"(^|\W){re.escape(str(getattr(s, attr)))}(\W|$)", documented), (name, documented)
    for name, attr in {"TENALI_TICKERS": "tickers", "TENALI_FRED_SERIES": "fred_series",
                       "TENALI_CRYPTO_SYMBOLS": "crypto_symbols"}.items():
        assert VARIABLES[name][1] == ",".join(getattr(demo, attr))


def test_refresh_hours_take_any_non_negative_number():
    assert load_settings({"TENALI_REFRESH_HOURS": "12"}).refresh_hours == 12.0
    assert load_settings({"TENALI_REFRESH_HOURS": "0"}).refresh_hours == 0.0
    with pytest.raises(SettingsError, match="TENALI_REFRESH_HOURS"):
        load_settings({"TENALI_REFRESH_HOURS": "-1"})
    assert load_settings({"TENALI_PROFILE": "local"}).instrument_buckets == 32
    assert load_settings({}).instrument_buckets == 1
    with pytest.raises(SettingsError, match="TENALI_INSTRUMENT_BUCKETS"):
        load_settings({"TENALI_INSTRUMENT_BUCKETS": "0"})


def test_resources_see_the_values_settings_validated_not_the_raw_text(tmp_path, monkeypatch):
    """A stray space (a .env file, a YAML value) is trimmed by load_settings; the resource must not read
    the untrimmed text at launch: ' sample ' is not 'sample' and would switch every source to live."""
    import dagster as dg

    from tenali_pipeline.resources import CorpusResource, LakeResource, SourcesResource, build_resources

    monkeypatch.setenv("TENALI_HOME", str(tmp_path))
    monkeypatch.setenv("TENALI_SOURCES", " sample ")
    monkeypatch.setenv("TENALI_LAKE_ROOT", f"{tmp_path / 'lake'}  ")
    monkeypatch.setenv("TENALI_START_DATE", "2020-01-01 ")
    monkeypatch.setenv("TENALI_VOCAB_SIZE", " 512")
    monkeypatch.setenv("TENALI_VAL_START", "2012-01-01")  # set without spaces: still an EnvVar for the UI
    resources = build_resources(load_settings())
    assert isinstance(resources["corpus_settings"].val_start, dg.EnvVar)
    seen = {}

    @dg.asset
    def probe(lake: LakeResource, sources: SourcesResource, corpus_settings: CorpusResource) -> None:
        seen.update(root=lake.root, sample=sources.is_sample, start=sources.start_date,
                    vocab=corpus_settings.vocab_size, val=corpus_settings.val_start)

    assert dg.materialize([probe], resources=resources).success
    assert seen == {"root": str(tmp_path / "lake"), "sample": True, "start": "2020-01-01", "vocab": 512,
                    "val": "2012-01-01"}


@pytest.mark.parametrize(("name", "value"), [("TENALI_VOCAB_SIZE", "0"), ("TENALI_VOCAB_SIZE", "-4096"),
                                             ("TENALI_SHARD_TOKENS", "0"), ("TENALI_TRAIN_STEPS", "-1"),
                                             ("TENALI_TRAIN_NPROC", "-2")])
def test_counts_below_their_minimum_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name) as e:
        load_settings({name: value})
    assert repr(value) in str(e.value)


def test_zero_nproc_still_means_one_per_gpu():
    assert load_settings({"TENALI_TRAIN_NPROC": "0"}).train_nproc == 0


@pytest.mark.parametrize(("name", "value"), [("TENALI_REFRESH_HOURS", "nan"), ("TENALI_REFRESH_HOURS", "inf"),
                                             ("TENALI_NEAR_DUP", "nan"), ("TENALI_CENTRAL_BANK_DELAY", "nan"),
                                             ("TENALI_CENTRAL_BANK_DELAY", "inf")])
def test_non_finite_numbers_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize("name", ["TENALI_VAL_START", "TENALI_START_DATE"])
@pytest.mark.parametrize("value", ["20120101", "2012-W01-1", "2012-001"])
def test_dates_other_than_yyyy_mm_dd_name_the_variable(name, value):
    """Python 3.11's fromisoformat takes these, but the resources and sources pass the text on as it is."""
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_tickers_are_upper_cased():
    assert load_settings({"TENALI_TICKERS": "aapl, Msft,brk-b"}).tickers == ("AAPL", "MSFT", "BRK-B")


@pytest.mark.parametrize("value", ["AAPL MSFT", "AAPL,BRK B", "universe,AAPL", "AAPL;MSFT"])
def test_malformed_tickers_name_the_variable(value):
    with pytest.raises(SettingsError, match="TENALI_TICKERS"):
        load_settings({"TENALI_TICKERS": value})


def test_an_unknown_model_preset_is_refused_at_start_naming_the_variable(tmp_path):
    """TENALI_MODEL=7B built the definitions and failed only at the pretraining step, minutes in."""
    with pytest.raises(SettingsError, match=r"TENALI_MODEL='7B' is not a model preset: choose from .*7b"):
        load_settings({"TENALI_HOME": str(tmp_path), "TENALI_MODEL": "7B"})
    assert load_settings({"TENALI_HOME": str(tmp_path), "TENALI_MODEL": "7b"}).model == "7b"
