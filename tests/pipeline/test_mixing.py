"""Mixing the training split: achieved shares near the weights, deterministic, up- and down-sampling, the
max-repeats cap on the total, missing and unweighted domains reported."""

import datetime as dt
import json

import polars as pl
import pytest

from tenali_pipeline.text.mixing import DEFAULT_WEIGHTS, MixConfig, estimate_tokens, mix
from tenali_pipeline.text.render import DOCUMENT_SCHEMA, DOMAINS

# documents per domain, each 400 bytes (100 tokens at 4 bytes per token)
SIZES = {"market": 300, "economic": 40, "news_filings": 500, "technical": 200, "educational": 60, "crypto_forex": 25}


def corpus(sizes: dict[str, int], nbytes: int = 400) -> pl.DataFrame:
    rows = []
    for domain, n in sizes.items():
        for i in range(n):
            stem = f"{domain} document {i} "
            rows.append(dict(doc_id=f"{domain}-{i:04d}", domain=domain, source="test", instrument="X",
                             date=dt.date(2020, 1, 1) + dt.timedelta(days=i % 300), title=stem,
                             text=(stem * nbytes)[:nbytes]))
    return pl.DataFrame(rows, schema=DOCUMENT_SCHEMA)


def test_default_weights_are_the_seeds_and_cover_the_domains():
    assert DEFAULT_WEIGHTS == {"market": 0.20, "economic": 0.15, "news_filings": 0.30, "technical": 0.10,
                               "educational": 0.15, "crypto_forex": 0.10}
    assert set(DEFAULT_WEIGHTS) == set(DOMAINS)
    assert sum(DEFAULT_WEIGHTS.values()) == pytest.approx(1.0)


def test_achieved_shares_are_close_to_the_weights():
    train = corpus(SIZES)
    mixed, report = mix(train)
    assert mixed.schema == train.schema
    for domain, share in report.shares().items():
        assert share == pytest.approx(DEFAULT_WEIGHTS[domain], abs=0.005), domain
    # the scarcest domain relative to its weight (crypto: 2,500 tokens for 10%) sets the total at 4 repeats
    assert report.capped_by_max_repeats
    assert report.total_target_tokens == 100_000 < report.input_tokens == 112_500
    crypto = report.domains["crypto_forex"]
    assert crypto.repeat_factor == 4.0 and crypto.documents == 100 and crypto.unique_documents == 25
    news = report.domains["news_filings"]
    assert news.repeat_factor < 1 and news.documents == news.unique_documents == 300  # down-sampled
    assert mixed.group_by("domain").len().sort("domain").rows() == sorted(
        (d, m.documents) for d, m in report.domains.items())
    # copies come in rounds (copy k of every document repeated k times or more), each in (date, doc_id) order
    rounds = mixed.with_columns(round=pl.int_range(pl.len()).over("doc_id"))
    assert rounds["round"].to_list() == sorted(rounds["round"].to_list())
    assert rounds["round"].max() == 3
    for _, part in rounds.group_by("round"):
        assert part.select("date", "doc_id").rows() == sorted(part.select("date", "doc_id").rows())


def test_copies_of_a_repeated_document_are_never_side_by_side():
    """The loader shuffles contiguous windows of the token stream, not documents: copies written next to
    each other would share a window, and every copy after the first would be copied from the context."""
    train = corpus({"market": 200, "crypto_forex": 10}, nbytes=40)  # short documents: many per window
    mixed, report = mix(train, MixConfig(weights={"market": 0.5, "crypto_forex": 0.5}, max_repeats=4))
    crypto = report.domains["crypto_forex"]
    assert crypto.documents == 40 and crypto.unique_documents == 10  # each crypto document 4 times
    ids = mixed["doc_id"].to_list()
    positions: dict[str, list[int]] = {}
    for i, doc_id in enumerate(ids):
        positions.setdefault(doc_id, []).append(i)
    # copies at least a round apart: every other document mixed in at least that many times sits between them
    gaps = [b - a for p in positions.values() for a, b in zip(p, p[1:])]
    assert gaps and min(gaps) >= 10


def test_without_the_cap_the_input_total_is_kept():
    mixed, report = mix(corpus(SIZES), MixConfig(max_repeats=10))
    assert not report.capped_by_max_repeats
    assert report.total_target_tokens == report.input_tokens == 112_500
    assert report.total_achieved_tokens == pytest.approx(112_500, rel=0.01)
    assert report.domains["crypto_forex"].repeat_factor == pytest.approx(4.5, abs=0.03)  # 11,250 of 2,500 tokens
    for domain, share in report.shares().items():
        assert share == pytest.approx(DEFAULT_WEIGHTS[domain], abs=0.005)


def test_mixing_is_deterministic_and_the_seed_picks_the_subsample():
    train = corpus(SIZES)
    a, ra = mix(train)
    b, rb = mix(train.sample(fraction=1.0, shuffle=True, seed=3))  # input order does not matter
    assert a.equals(b) and ra.to_dict() == rb.to_dict()
    c, _ = mix(train, MixConfig(seed=1))
    picked = lambda df: set(df.filter(pl.col("domain") == "news_filings")["doc_id"])  # noqa: E731
    assert picked(a) != picked(c) and len(picked(a)) == len(picked(c))


def test_explicit_total_and_bytes_per_token():
    mixed, report = mix(corpus(SIZES), MixConfig(total_tokens=20_000, bytes_per_token=2.0))
    assert report.total_target_tokens == 20_000 and report.bytes_per_token == 2.0
    assert report.input_tokens == 225_000  # 400-byte documents are 200 tokens at 2 bytes per token
    assert report.total_achieved_tokens == pytest.approx(20_000, rel=0.02)
    assert all(m.repeat_factor < 1 for m in report.domains.values())
    assert pl.select(estimate_tokens(pl.lit("abcdefghi"), 4.0)).item() == 3  # ceil(9 / 4)


def test_a_missing_domain_is_reported_and_its_weight_redistributed():
    sizes = {k: v for k, v in SIZES.items() if k != "educational"}
    _, report = mix(corpus(sizes))
    assert report.missing == ["educational"]
    assert "educational" not in report.domains
    # 0.15 spread over the other 0.85 in proportion: market 0.20 / 0.85, ...
    for domain, share in report.shares().items():
        assert report.domains[domain].weight == pytest.approx(DEFAULT_WEIGHTS[domain] / 0.85, abs=1e-6)
        assert share == pytest.approx(DEFAULT_WEIGHTS[domain] / 0.85, abs=0.005)
    assert "missing (weight redistributed): educational" in report.to_markdown()
    with pytest.raises(ValueError, match="educational"):
        mix(corpus(sizes), MixConfig(on_missing="error"))


def test_unweighted_domains_are_left_out_and_listed():
    weights = {"market": 0.5, "technical": 0.5}
    mixed, report = mix(corpus(SIZES), MixConfig(weights=weights))
    assert set(mixed["domain"]) == {"market", "technical"}
    assert report.unweighted == ["crypto_forex", "economic", "educational", "news_filings"]
    assert report.shares() == pytest.approx({"market": 0.5, "technical": 0.5}, abs=0.005)


def test_report_serialises_and_bad_configs_fail():
    _, report = mix(corpus(SIZES))
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data["domains"]["market"]) >= {"weight", "target_tokens", "achieved_tokens", "documents",
                                              "repeat_factor", "share"}
    assert report.to_markdown().startswith("| domain | weight | share |")
    with pytest.raises(ValueError, match="weights"):
        mix(corpus(SIZES), MixConfig(weights={"market": 0.0}))
    with pytest.raises(ValueError, match="none of the weighted domains"):
        mix(corpus({"market": 3}), MixConfig(weights={"technical": 1.0}))


def test_a_weighted_domain_of_long_documents_is_not_cut_to_nothing():
    """Down-sampling a domain whose documents are each longer than twice its target took none of them:
    a weighted domain vanished from training. It now keeps at least its first document in sampling order."""
    train = pl.concat([corpus({"market": 200}), corpus({"educational": 2}, nbytes=400_000)])  # 100k tokens each
    mixed, report = mix(train, MixConfig(weights={"market": 0.5, "educational": 0.5}, total_tokens=40_000))
    edu = report.domains["educational"]
    assert edu.target_tokens == 20_000 and edu.documents == edu.unique_documents == 1
    assert set(mixed["domain"]) == {"market", "educational"}
    assert report.domains["market"].achieved_tokens == pytest.approx(20_000, rel=0.01)  # the rest is unchanged
