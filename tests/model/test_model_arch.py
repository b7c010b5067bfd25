"""The Transformer: shapes, loss, causality, GQA, tied weights and the KV cache."""

import math

import pytest
import torch

from tenali_model.config import ModelConfig, preset
from tenali_model.model import KVCache, SlotKVCache, Transformer, apply_rope, decode_slots


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**{**vars(preset("tiny")), **kw}))


def test_forward_shapes_and_initial_loss():
    model = tiny()
    idx, targets = torch.randint(0, 512, (2, 2, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 16, 512) and logits.dtype == torch.float32
    assert abs(loss.item() - math.log(512)) < 0.1  # near-uniform predictions at init
    assert model(idx)[1] is None


def test_tied_embeddings_share_storage():
    model = tiny()
    assert model.lm_head.weight is model.tok_embeddings.weight
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.tok_embeddings.weight


def test_residual_projections_are_scaled():
    model = Transformer(preset("demo"))
    wo = model.layers[0].attn.wo.weight.std().item()
    wq = model.layers[0].attn.wq.weight.std().item()
    assert wq == pytest.approx(0.02, rel=0.1)
    assert wo == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.1)


def test_causal_future_tokens_do_not_change_the_past():
    model = tiny()
    idx = torch.randint(0, 512, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 512
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_z_loss_adds_logsumexp_penalty():
    model = tiny()
    idx = torch.randint(0, 512, (2, 8))
    logits, ce = model(idx, idx)
    _, total = model(idx, idx, z_loss=1e-2)
    expected = ce + 1e-2 * torch.logsumexp(logits, -1).pow(2).mean()
    torch.testing.assert_close(total, expected)


def test_ignore_index():
    model = tiny()
    idx = torch.randint(0, 512, (1, 8))
    targets = idx.clone()
    targets[0, 4:] = -1
    logits, loss = model(idx, targets)
    ref = torch.nn.functional.cross_entropy(logits[0, :4], idx[0, :4])
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_every_target_ignored_gives_zero_loss_on_every_path(z_loss):
    """The logits path (with_logits, a hooked head, torch.compile) and the fused loss agree when no
    target is counted: 0 with zero gradients, not NaN (NaN * 0 counted targets would still be NaN)."""
    model = tiny()
    idx = torch.randint(0, 512, (2, 8))
    none = torch.full_like(idx, -1)
    fused = model(idx, none, z_loss=z_loss, with_logits=False)[1]
    assert fused.item() == 0.0
    plain = model(idx, none, z_loss=z_loss)[1]
    assert plain.item() == 0.0
    plain.backward()
    assert all(p.grad is None or not p.grad.isnan().any() for p in model.parameters())
    # partly counted: still the mean over the counted targets
    part = idx.clone()
    part[:, 5:] = -1
    torch.testing.assert_close(model(idx, part, z_loss=z_loss)[1],
                               model(idx, part, z_loss=z_loss, with_logits=False)[1])


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 4}, {"n_kv_heads": 1}, {"activation": "gelu"}])
def test_kv_cache_matches_full_forward(kw):
    model = tiny(**kw).eval()
    idx = torch.randint(0, 512, (2, 24))
    full, _ = model(idx)
    cache = KVCache(model.config, 2, 24, "cpu", torch.float32)
    parts = [model(idx[:, :10], cache=cache, start_pos=0)[0]]
    parts.append(model(idx[:, 10:13], cache=cache, start_pos=10)[0])  # a multi-token chunk
    for t in range(13, 24):
        parts.append(model(idx[:, t:t + 1], cache=cache, start_pos=t)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 4}, {"n_kv_heads": 1}, {"activation": "gelu"}])
@pytest.mark.parametrize("slots, lengths", [
    ([0, 1, 2], [7, 7, 7]),  # contiguous rows at one position: views, no mask
    ([1, 2], [5, 11]),       # contiguous rows at different positions: views and a mask
    ([3, 0, 2], [9, 4, 6]),  # rows out of order: gathered
    ([2, 0], [5, 5]),        # out of order at one position: prefilled together through rows()
])
def test_slot_decoding_matches_full_forward(kw, slots, lengths):
    """The server's batched step (`decode_slots`) gives each row the logits of its own full forward."""
    model = tiny(**kw).eval()
    g = torch.Generator().manual_seed(len(slots))
    seqs = [torch.randint(0, 512, (n + 4,), generator=g) for n in lengths]
    cache = SlotKVCache(model.config, 4, 32, "cpu", torch.float32)
    with torch.no_grad():
        if len(set(lengths)) == 1:  # one batched prefill, as the engine does for prompts of one length
            n = lengths[0]
            model(torch.stack([seq[:n] for seq in seqs]), cache=cache.rows(slots), start_pos=0)
        else:
            for slot, seq, n in zip(slots, seqs, lengths):
                model(seq[None, :n], cache=cache.view(slot), start_pos=0)
        _decode_matches_full_forward(model, cache, slots, seqs, lengths)


def _decode_matches_full_forward(model, cache, slots, seqs, lengths, steps: int = 4):
    """Every row advances one token per step through decode_slots; each row's logits equal its own
    full forward's."""
    for step in range(steps):
        tokens = torch.stack([seq[n + step] for seq, n in zip(seqs, lengths)])
        positions = torch.tensor([n + step for n in lengths])
        got = decode_slots(model, tokens, cache, torch.tensor(slots), positions)
        for row, (seq, n) in enumerate(zip(seqs, lengths)):
            want = model(seq[None, :n + step + 1])[0][0, -1]
            torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 1}])
def test_right_padded_prefill_then_slot_decoding_matches_full_forward(kw):
    """The engine's batched prefill of prompts of several lengths: right-padded to the longest, each
    row's last real position gives its first logits, and the pads it wrote to the cache are never
    seen by decoding (each position is written before it can be attended to)."""
    model = tiny(**kw).eval()
    g = torch.Generator().manual_seed(7)
    lengths, slots = [5, 11, 9], [2, 0, 1]
    seqs = [torch.randint(0, 512, (n + 4,), generator=g) for n in lengths]
    cache = SlotKVCache(model.config, 4, 32, "cpu", torch.float32)
    padded = torch.stack([torch.cat([s[:n], torch.full((11 - n,), 3)]) for s, n in zip(seqs, lengths)])
    with torch.no_grad():
        h = model(padded, cache=cache.rows(slots), start_pos=0, hidden=True)[0]
        first = model.lm_head(h[torch.arange(3), torch.tensor(lengths) - 1])
        for row, (seq, n) in enumerate(zip(seqs, lengths)):
            torch.testing.assert_close(first[row], model(seq[None, :n])[0][0, -1], atol=1e-5, rtol=1e-4)
        _decode_matches_full_forward(model, cache, slots, seqs, lengths)


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 1}])
def test_static_decoding_matches_slot_decoding(kw):
    """`decode_static` (every slot, the whole cache length under a mask: the CUDA graph's step) gives
    the live rows decode_slots' logits, while free slots decode dummies beside them; the live rows'
    caches stay right for the next step (checked over 4 steps against full forwards)."""
    from tenali_model.model import decode_static

    model = tiny(**kw).eval()
    g = torch.Generator().manual_seed(3)
    lengths, slots = [5, 11, 9], [4, 0, 2]  # slots 1, 3 and 5 are free
    seqs = [torch.randint(0, 512, (n + 4,), generator=g) for n in lengths]
    cache = SlotKVCache(model.config, 6, 32, "cpu", torch.float32)
    twin = SlotKVCache(model.config, 6, 32, "cpu", torch.float32)
    with torch.no_grad():
        for slot, seq, n in zip(slots, seqs, lengths):
            model(seq[None, :n], cache=cache.view(slot), start_pos=0)
            model(seq[None, :n], cache=twin.view(slot), start_pos=0)
        for step in range(4):
            tokens = torch.full((6,), 7)
            positions = torch.zeros(6, dtype=torch.long)
            for slot, seq, n in zip(slots, seqs, lengths):
                tokens[slot], positions[slot] = seq[n + step], n + step
            got = decode_static(model, tokens, positions, cache)[slots]
            want = decode_slots(model, tokens[slots], twin, torch.tensor(slots), positions[slots])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            for row, (seq, n) in enumerate(zip(seqs, lengths)):
                full = model(seq[None, :n + step + 1])[0][0, -1]
                torch.testing.assert_close(got[row], full, atol=1e-5, rtol=1e-4)
        with pytest.raises(ValueError, match="one entry per slot"):
            decode_static(model, tokens[:3], positions[:3], cache)


def test_slot_decoding_calls_wrapped_layers():
    """A layer with a forward hook (or any module in a Linear's place, such as a LoRA layer) is
    called, not bypassed, by the decoding step's shortcut for plain Linears."""
    model = tiny().eval()
    model.layers[0].attn.wq.register_forward_hook(lambda mod, args, out: out * 0.5)
    seq = torch.randint(0, 512, (9,))
    cache = SlotKVCache(model.config, 1, 16, "cpu", torch.float32)
    with torch.no_grad():
        model(seq[None, :8], cache=cache.view(0), start_pos=0)
        got = decode_slots(model, seq[8:9], cache, torch.tensor([0]), torch.tensor([8]))
        want = model(seq[None])[0][0, -1]
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-4)


def test_rope_rotates_half_like_hugging_face():
    """The signed-sin table and roll give Hugging Face's x * cos + rotate_half(x) * sin, bit for bit."""
    model = tiny()
    cfg = model.config
    x = torch.randn(2, 4, 16, cfg.head_dim)
    # Hugging Face's tables, computed here from the config: angles = position * theta^(-2i/hd), halves repeated
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    angles = torch.outer(torch.arange(16, dtype=torch.float32), freqs)
    cos, sin = torch.cat([angles, angles], dim=-1).cos(), torch.cat([angles, angles], dim=-1).sin()
    half = cfg.head_dim // 2
    rotate_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    assert torch.equal(model.rope_cos[:16], cos)
    assert torch.equal(apply_rope(x, model.rope_cos[:16], model.rope_sin[:16]), x * cos + rotate_half * sin)


def test_last_only_gives_the_last_positions_logits():
    model = tiny().eval()
    idx = torch.randint(0, 512, (2, 12))
    full, _ = model(idx)
    last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, 512)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="last_only"):
        model(idx, idx, last_only=True)


def test_too_long_sequence_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_backward_reaches_every_parameter():
    model = tiny()
    idx = torch.randint(0, 512, (2, 8))
    model(idx, idx)[1].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kw", [{}, {"activation": "gelu"}])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(kw):
    idx = torch.randint(0, 512, (2, 16))
    plain, ckpt = tiny(**kw), tiny(**kw)
    ckpt.set_activation_checkpointing(True)
    assert all(layer.checkpointing for layer in ckpt.layers)
    losses = []
    for model in (plain, ckpt):
        loss = model(idx, idx)[1]
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)
    with torch.no_grad():  # inference (and the KV cache) never recomputes
        torch.testing.assert_close(ckpt(idx)[0], plain(idx)[0], rtol=0, atol=0)
