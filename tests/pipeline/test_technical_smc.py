"""Smart-money concepts against a written-out, bar-by-bar reference on real prices, and the range searches
they rely on against brute force."""

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.sources.sample import SampleMarketClient
from tenali_pipeline.technicals.features import compute_features
from tenali_pipeline.technicals.smc import first_hit, range_argext

L, TOL, LOOKBACK = 5, 0.1, 3


@pytest.fixture(scope="module")
def adjusted() -> pl.DataFrame:
    """Real daily bars (AAPL, IBM, MSFT 2000-2013), already adjusted, so every level is in one unit."""
    m = SampleMarketClient(["AAPL", "IBM", "MSFT"]).fetch()
    f = pl.col("adj_close") / pl.col("close")
    return m.select("ticker", "date", open=pl.col("open") * f, high=pl.col("high") * f, low=pl.col("low") * f,
                    close="adj_close", volume="volume")


@pytest.fixture(scope="module")
def features(adjusted) -> pl.DataFrame:
    return compute_features(adjusted, instrument_col="ticker", swing_length=L, liquidity_tolerance=TOL,
                            liquidity_lookback=LOOKBACK)


def reference(o, h, l, c, atr, dates) -> dict[str, list]:
    """The module docstring of technicals/smc.py, one bar at a time, knowing only bars up to the current one."""
    n = len(c)
    out = {k: [None] * n for k in ("swing_high_index", "swing_high_price", "swing_low_index", "swing_low_price",
                                   "structure_level", "ob_top", "ob_bottom", "ob_date", "fvg_top", "fvg_bottom",
                                   "liquidity_level", "liquidity_date")}
    for k in ("swing_high", "swing_low"):
        out[k] = [False] * n
    for k in ("bos", "choch", "market_structure", "ob", "fvg", "liquidity", "fvg_bull_mitigated",
              "fvg_bear_mitigated", "ob_bull_mitigated", "ob_bear_mitigated", "liq_sweep_high", "liq_sweep_low"):
        out[k] = [0] * n
    for k in ("fvg_bull_mitigated_date", "fvg_bear_mitigated_date", "ob_bull_mitigated_date", "ob_bear_mitigated_date",
              "liq_sweep_high_date", "liq_sweep_low_date"):
        out[k] = [None] * n
    open_objects = []  # (kind, direction, level, recorded at)
    cur_h = cur_l = None
    trend = 0
    highs, lows = [], []  # confirmed swings so far: (price, bar)
    for t in range(n):
        # resolutions of objects recorded on earlier bars
        still = []
        for kind, d, level, at in open_objects:
            if kind == "liq":
                hit = h[t] > level if d == 1 else l[t] < level
                name = "liq_sweep_high" if d == 1 else "liq_sweep_low"
            else:
                hit = l[t] <= level if d == 1 else h[t] >= level
                name = f"{kind}_{'bull' if d == 1 else 'bear'}_mitigated"
            if hit:
                out[name][t] += 1
                prev = out[name + "_date"][t]
                out[name + "_date"][t] = dates[at] if prev is None or dates[at] > prev else prev
            else:
                still.append((kind, d, level, at))
        open_objects = still
        # swings confirmed on this bar
        s = t - L
        if s - L >= 0:
            if all(h[s] > h[k] for k in range(s - L, s)) and all(h[s] >= h[k] for k in range(s + 1, t + 1)):
                out["swing_high"][t], out["swing_high_index"][t], out["swing_high_price"][t] = True, s, h[s]
                cur_h = [h[s], s, False]
            if all(l[s] < l[k] for k in range(s - L, s)) and all(l[s] <= l[k] for k in range(s + 1, t + 1)):
                out["swing_low"][t], out["swing_low_index"][t], out["swing_low_price"][t] = True, s, l[s]
                cur_l = [l[s], s, False]
        # liquidity pools: the new swing against earlier untaken ones (a bar confirming both keeps the highs')
        for flag, price_key, swings, sign in (("swing_high", "swing_high_price", highs, 1),
                                              ("swing_low", "swing_low_price", lows, -1)):
            if not out[flag][t]:
                continue
            p = out[price_key][t]
            if atr[t] is not None and out["liquidity"][t] == 0:
                for k in range(1, min(LOOKBACK, len(swings)) + 1):
                    pk, bar_k = swings[-k]
                    edge = max(p, pk) if sign == 1 else min(p, pk)
                    between = [q for q, _ in swings[len(swings) - k + 1:]]
                    if abs(p - pk) <= TOL * atr[t] and all(sign * (q - edge) <= 0 for q in between):
                        out["liquidity"][t], out["liquidity_level"][t], out["liquidity_date"][t] = sign, edge, dates[bar_k]
                        open_objects.append(("liq", sign, edge, t))
                        break
            swings.append((p, out[price_key.replace("price", "index")][t]))
        # breaks of the current swings
        up = cur_h is not None and not cur_h[2] and c[t] > cur_h[0]
        dn = cur_l is not None and not cur_l[2] and c[t] < cur_l[0]
        if up:
            cur_h[2] = True
        if dn:
            cur_l[2] = True
        if up != dn:
            d = 1 if up else -1
            level, sbar = (cur_h if up else cur_l)[:2]
            out["bos" if trend in (0, d) else "choch"][t] = d
            out["structure_level"][t] = level
            seg = range(sbar + 1, t)
            if up:
                j = max(seg, key=lambda k: (-l[k], k))  # lowest low, last on ties
            else:
                j = max(seg, key=lambda k: (h[k], k))
            out["ob"][t], out["ob_top"][t], out["ob_bottom"][t], out["ob_date"][t] = d, h[j], l[j], dates[j]
            open_objects.append(("ob", d, h[j] if up else l[j], t))
            trend = d
        out["market_structure"][t] = trend
        # fair value gaps completed on this bar
        if t >= 2 and h[t - 2] < l[t] and c[t - 1] > o[t - 1]:
            out["fvg"][t], out["fvg_top"][t], out["fvg_bottom"][t] = 1, l[t], h[t - 2]
            open_objects.append(("fvg", 1, l[t], t))
        elif t >= 2 and l[t - 2] > h[t] and c[t - 1] < o[t - 1]:
            out["fvg"][t], out["fvg_top"][t], out["fvg_bottom"][t] = -1, l[t - 2], h[t]
            open_objects.append(("fvg", -1, h[t], t))
        # (an object recorded on bar t can only be resolved from bar t + 1 on: it joins the list after the check)
    return out


@pytest.mark.parametrize("ticker", ["AAPL", "MSFT"])
def test_smc_matches_a_bar_by_bar_reference(adjusted, features, ticker):
    g = features.filter(pl.col("ticker") == ticker)
    cols = [g[c].to_list() for c in ("open", "high", "low", "close", "atr_14", "date")]
    ref = reference(*cols)
    for name, want in ref.items():
        got = g[name].to_list()
        assert got == want, (name, next(i for i, (a, b) in enumerate(zip(got, want)) if a != b))
    # the comparison covers real activity
    assert sum(ref["choch"][i] != 0 for i in range(g.height)) > 20
    assert sum(ref["liquidity"][i] != 0 for i in range(g.height)) > 5
    assert sum(ref["liq_sweep_high"]) + sum(ref["liq_sweep_low"]) > 5
    assert sum(ref["ob_bull_mitigated"]) > 20


def test_events_are_stamped_when_confirmed(features):
    sh = features.filter(pl.col("swing_high"))
    assert (sh["bar_index"] - sh["swing_high_index"] == L).all()
    assert (sh["swing_high_date"] < sh["date"]).all()
    brk = features.filter((pl.col("bos") != 0) | (pl.col("choch") != 0))
    assert (brk["structure_swing_date"] < brk["date"]).all()
    assert (brk["ob_date"] < brk["date"]).all() and (brk["ob_date"] > brk["structure_swing_date"]).all()
    assert features.filter((pl.col("bos") != 0) & (pl.col("choch") != 0)).is_empty()
    for col in ("fvg_bull_mitigated", "ob_bear_mitigated", "liq_sweep_high"):
        hits = features.filter(pl.col(col) > 0)
        assert (hits[f"{col}_date"] < hits["date"]).all()
        assert hits[f"{col}_date"].null_count() == 0


def _brute_first_hit(v, start, level, end, below, strict):
    out = []
    for s, lv, e, st in zip(start, level, end, strict):
        j = -1
        for k in range(s, e + 1):
            x, y = (v[k], lv) if below else (-v[k], -lv)
            if (x < y) if st else (x <= y):
                j = k
                break
        out.append(j)
    return np.array(out)


@pytest.mark.parametrize("chunk_rows", [7, 1 << 20])
def test_range_searches_against_brute_force(chunk_rows):
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 300, size=30)  # long enough for the sparse tables beyond the bar-by-bar scan
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n = int(sizes.sum())
    v = np.round(rng.normal(0, 1, n), 1)  # rounding makes ties common
    group = np.repeat(np.arange(sizes.size), sizes)
    end_of = (starts + sizes - 1)[group]
    q = rng.integers(0, n, size=400)
    level = np.round(rng.normal(0, 1, q.size), 1)
    strict = rng.uniform(size=q.size) < 0.5
    for below in (True, False):
        got = first_hit(v, q, level, end_of[q], starts, below=below, strict=strict, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(got, _brute_first_hit(v, q, level, end_of[q], below, strict))
    hi = np.minimum(q + rng.integers(0, 200, size=q.size), end_of[q])
    for lowest in (True, False):
        got = range_argext(v, q, hi, starts, lowest=lowest, chunk_rows=chunk_rows)
        want = [max(range(a, b + 1), key=lambda k: ((-v[k]) if lowest else v[k], k)) for a, b in zip(q, hi)]
        np.testing.assert_array_equal(got, want)
