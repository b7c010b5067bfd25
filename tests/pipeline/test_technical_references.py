"""compute_features against the reference libraries on real prices (bokeh sample data, 5 stocks 2000-2013).

Tolerances and conventions (see technicals/indicators.py, patterns.py, smc.py):
- ``ta`` 0.11: MACD, Bollinger (ddof=0), stochastic %K/%D equal to 1e-9; RSI and ATR after a 250-bar
  warm-up to 1e-5 (``ta`` seeds RSI's EWM with a zero change on bar 0 and ATR's Wilder average one bar
  earlier, including bar 0's high-low); OBV equal in every step where the close changed (``ta`` adds the
  volume on unchanged closes and starts from the first bar's volume).
- TA-Lib: RSI, ATR, fast stochastic (STOCHF 14/3) and OBV (minus its first-bar start) equal from the first
  value; candlestick patterns compared as shapes (``trend=False``) with agreement rates, printed and bounded.
- smartmoneyconcepts 0.0.27: fair value gaps and their mitigation bars equal once its marks are moved from the
  middle candle to the completing one; swings compared after moving its marks L bars later.
"""

import contextlib
import io

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.sources.sample import SampleMarketClient
from tenali_pipeline.technicals.features import compute_features

TICKERS = ["AAPL", "GOOG", "IBM", "MSFT", "FB"]


@pytest.fixture(scope="module")
def adjusted() -> pl.DataFrame:
    """Split/dividend-adjusted OHLC (adj_factor 1 downstream), so library inputs and our levels share units."""
    m = SampleMarketClient().fetch()
    f = pl.col("adj_close") / pl.col("close")
    return m.select("ticker", "date", open=pl.col("open") * f, high=pl.col("high") * f, low=pl.col("low") * f,
                    close="adj_close", volume=pl.col("volume").cast(pl.Float64))


@pytest.fixture(scope="module")
def ours(adjusted) -> pl.DataFrame:
    return compute_features(adjusted, instrument_col="ticker")


def _per_ticker(frame: pl.DataFrame):
    for t in TICKERS:
        yield t, frame.filter(pl.col("ticker") == t)


def _close(a, b, rtol=1e-9, atol=1e-9, start=0, msg=""):
    a, b = np.asarray(a, dtype=float)[start:], np.asarray(b, dtype=float)[start:]
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=msg)


def test_indicators_match_ta(ours):
    ta = pytest.importorskip("ta")
    for t, g in _per_ticker(ours):
        h, l, c, v = (g[k].to_pandas() for k in ("high", "low", "close", "volume"))
        macd = ta.trend.MACD(c, 26, 12, 9)
        _close(g["macd"], macd.macd(), msg=t)
        _close(g["macd_signal"], macd.macd_signal(), msg=t)
        _close(g["macd_hist"], macd.macd_diff(), msg=t)
        bb = ta.volatility.BollingerBands(c, 20, 2)
        _close(g["bb_upper"], bb.bollinger_hband(), msg=t)
        _close(g["bb_lower"], bb.bollinger_lband(), msg=t)
        stoch = ta.momentum.StochasticOscillator(h, l, c, 14, 3)
        _close(g["stoch_k"], stoch.stoch(), msg=t)
        _close(g["stoch_d"], stoch.stoch_signal(), msg=t)
        # different seeds, same recursion: equal after the warm-up
        _close(g["rsi_14"], ta.momentum.RSIIndicator(c, 14).rsi(), atol=1e-5, start=250, msg=t)
        _close(g["atr_14"], ta.volatility.AverageTrueRange(h, l, c, 14).average_true_range(), rtol=1e-5,
               start=250, msg=t)
        obv_ta = ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume().to_numpy()
        moved = np.diff(c.to_numpy()) != 0
        _close(np.diff(g["obv"].to_numpy())[moved], np.diff(obv_ta)[moved], msg=t)


def test_indicators_match_talib(ours):
    talib = pytest.importorskip("talib")
    for t, g in _per_ticker(ours):
        h, l, c, v = (g[k].to_numpy() for k in ("high", "low", "close", "volume"))
        _close(g["rsi_14"], talib.RSI(c, 14), msg=t)
        _close(g["atr_14"], talib.ATR(h, l, c, 14), msg=t)
        k, d = talib.STOCHF(h, l, c, fastk_period=14, fastd_period=3, fastd_matype=0)
        _close(g["stoch_k"], k, start=15, msg=t)  # TA-Lib holds %K back until %D exists
        _close(g["stoch_d"], d, msg=t)
        _close(g["obv"], talib.OBV(c, v) - v[0], msg=t)
        _close(g["sma_200"], talib.SMA(c, 200), msg=t)
        _close(g["bb_upper"], talib.BBANDS(c, 20, 2, 2, 0)[0], msg=t)
        # TA-Lib seeds its EMA with an SMA: the MACD differs early and converges
        _close(g["macd"], talib.MACD(c, 12, 26, 9)[0], atol=1e-6, start=250, msg=t)


TALIB_PATTERNS = {
    "cdl_doji": ("CDLDOJI", 0), "cdl_hammer": ("CDLHAMMER", 0), "cdl_hanging_man": ("CDLHANGINGMAN", 0),
    "cdl_shooting_star": ("CDLSHOOTINGSTAR", 0), "cdl_engulfing_bull": ("CDLENGULFING", 1),
    "cdl_engulfing_bear": ("CDLENGULFING", -1), "cdl_harami_bull": ("CDLHARAMI", 1),
    "cdl_harami_bear": ("CDLHARAMI", -1), "cdl_morning_star": ("CDLMORNINGSTAR", 0),
    "cdl_evening_star": ("CDLEVENINGSTAR", 0), "cdl_three_white_soldiers": ("CDL3WHITESOLDIERS", 0),
    "cdl_three_black_crows": ("CDL3BLACKCROWS", 0),
}
# Least agreement (|ours & talib| / |ours | talib|) required: equal definitions must agree, different ones
# (documented in technicals/patterns.py) only have to overlap.
MIN_AGREEMENT = {"cdl_doji": 1.0, "cdl_engulfing_bull": 0.95, "cdl_engulfing_bear": 0.95, "cdl_harami_bull": 0.95,
                 "cdl_harami_bear": 0.95, "cdl_morning_star": 0.95, "cdl_evening_star": 0.95}


def test_candlestick_shapes_agree_with_talib(adjusted):
    talib = pytest.importorskip("talib")
    shapes = compute_features(adjusted, instrument_col="ticker", trend=False)
    rows = []
    for name, (fn, sign) in TALIB_PATTERNS.items():
        ours_n = ref_n = both = 0
        for _, g in _per_ticker(shapes):
            o, h, l, c = (g[k].to_numpy() for k in ("open", "high", "low", "close"))
            r = getattr(talib, fn)(o, h, l, c)
            ref = r > 0 if sign > 0 else r < 0 if sign < 0 else r != 0
            mine = g[name].to_numpy()
            ours_n, ref_n, both = ours_n + mine.sum(), ref_n + ref.sum(), both + (mine & ref).sum()
        agreement = both / max(1, ours_n + ref_n - both)
        rows.append((name, fn, int(ours_n), int(ref_n), int(both), agreement))
        assert both > 0, name
        assert agreement >= MIN_AGREEMENT.get(name, 0.0), (name, agreement)
    print("\npattern                     TA-Lib              ours  TA-Lib   both  agreement")  # pytest -s or -rP
    for name, fn, a, b, both, agreement in rows:
        print(f"{name:<27} {fn:<18} {a:5d} {b:7d} {both:6d}  {agreement:9.2f}")
    # the trend condition only removes detections
    trended = compute_features(adjusted, instrument_col="ticker")
    for name in TALIB_PATTERNS:
        assert (trended[name] & ~shapes[name]).sum() == 0, name


def _quiet_smc():
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
        return pytest.importorskip("smartmoneyconcepts").smc


def test_fair_value_gaps_match_smartmoneyconcepts_one_bar_later(ours):
    smc = _quiet_smc()
    for t, g in _per_ticker(ours):
        ohlc = g.select("open", "high", "low", "close", "volume").to_pandas()
        ref = smc.fvg(ohlc)
        kind = ref["FVG"].fillna(0).to_numpy()
        # smartmoneyconcepts marks the middle candle, using the next bar; we stamp the completing bar
        np.testing.assert_array_equal(g["fvg"].to_numpy()[1:], kind[:-1], err_msg=t)
        gaps = np.flatnonzero(kind != 0)
        _close(g["fvg_top"].to_numpy()[gaps + 1], ref["Top"].to_numpy()[gaps], msg=t)
        _close(g["fvg_bottom"].to_numpy()[gaps + 1], ref["Bottom"].to_numpy()[gaps], msg=t)
        # each gap mitigated on the same bar, which is where we count it
        mitigated = ref["MitigatedIndex"].fillna(0).to_numpy().astype(int)
        for sign, col in ((1, "fvg_bull_mitigated"), (-1, "fvg_bear_mitigated")):
            sel = (kind == sign) & (mitigated > 0)
            np.testing.assert_array_equal(g[col].to_numpy(), np.bincount(mitigated[sel], minlength=g.height),
                                          err_msg=f"{t} {col}")


def test_swings_agree_with_smartmoneyconcepts_after_its_look_ahead(ours):
    smc = _quiet_smc()
    length = 5
    found = total = mine_total = 0
    for _, g in _per_ticker(ours):
        ohlc = g.select("open", "high", "low", "close", "volume").to_pandas()
        hl = smc.swing_highs_lows(ohlc, swing_length=length)["HighLow"].fillna(0).to_numpy().copy()
        hl[[0, -1]] = 0  # it forces marks on the first and last bars
        for sign, col in ((1, "swing_high"), (-1, "swing_low")):
            theirs = set(np.flatnonzero(hl == sign) + length)  # when the swing could first be known
            mine = set(np.flatnonzero(g[col].to_numpy()))
            found += len(theirs & mine)
            total += len(theirs)
            mine_total += len(mine)
    recall = found / total
    print(f"\nswings: smartmoneyconcepts {total}, ours {mine_total}, both {found} "
          f"({recall:.0%} of theirs; they also drop the lower of consecutive highs using later swings)")
    assert recall >= 0.9
