"""The post-training losses against straightforward reference implementations written here in plain
PyTorch: distillation's temperature-scaled KL(teacher || student) mixed with cross-entropy, DPO's
sigmoid loss and metrics over the answer tokens only, per-token log-probabilities and their
gradients, SFT packing (no attention across conversations) and the loss normalisation over
gradient-accumulation micro-steps."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import CHATS, tiny_model_config, write_jsonl
from tenali_model.chat import encode_chat, prompt_ids
from tenali_model.checkpoint import load_model, save_checkpoint
from tenali_model.loss import linear_distill_loss, linear_token_logps
from tenali_model.model import Transformer
from tenali_model.posttrain.data import (Pair, chat_from_record, collate, collate_pairs, encode_pairs, encode_sft,
                                         pack, pad_id_of)
from tenali_model.posttrain.distill import Teacher, chunked_distill_loss, distill_loss, teacher_shape
from tenali_model.posttrain.dpo import dpo_loss, sequence_logps
from tenali_model.posttrain.sft import sft_loss

# --- reference implementations -----------------------------------------------------------------------


def ref_distill(s, t, y, T, alpha):
    """Per counted position: alpha T^2 sum_v p_t (log p_t - log p_s) + (1 - alpha) CE, probabilities at
    temperature T over the whole vocabulary, written out from softmax (no kl_div, no log_softmax)."""
    s, t = s.reshape(-1, s.shape[-1]).double(), t.reshape(-1, t.shape[-1]).double()
    y = y.reshape(-1)
    keep = y != -1
    ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1)
    p1 = torch.softmax(s, -1)
    ce = -p1.gather(1, y.clamp(min=0)[:, None]).squeeze(1).log()
    loss = alpha * T * T * kl + (1 - alpha) * ce
    return loss[keep].sum(), kl[keep].sum(), ce[keep].sum(), int(keep.sum())


def ref_token_logps(h, w, y):
    lp = torch.log_softmax(h @ w.t(), -1).gather(1, y.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(y != -1, lp, torch.zeros_like(lp))


# --- distillation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("T,alpha", [(1.0, 1.0), (2.5, 0.7), (3.0, 0.4), (0.5, 0.0)])
def test_distill_losses_and_gradients_equal_the_reference(T, alpha):
    torch.manual_seed(0)
    N, D, V = 13, 8, 11
    h = torch.randn(N, D, dtype=torch.float64)
    w = torch.randn(V, D, dtype=torch.float64)
    t = torch.randn(N, V) * 3
    y = torch.randint(0, V, (N,))
    y[[0, 5, 6, 12]] = -1  # ignored positions (padding / no target)
    ref_h, ref_w = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss, kl, ce, n = ref_distill(ref_h @ ref_w.t(), t.double(), y, T, alpha)
    g_out = torch.tensor(0.37, dtype=torch.float64)
    (loss * g_out).backward()
    assert n == 9
    # the full-logits path (compiled / hooked heads)
    s = (h @ w.t()).float().requires_grad_()
    total, count, stats = distill_loss(s[None], t[None], y[None], T, alpha)
    assert count == n
    torch.testing.assert_close(total.double(), loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["kl"].double(), kl.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["ce"].double(), ce.detach(), rtol=1e-5, atol=1e-6)
    # the chunked path, chunks that do not divide N, gradients of h and W included
    ch, cw = h.float().requires_grad_(), w.float().requires_grad_()
    total, kl_c, ce_c = linear_distill_loss(ch, cw, t, y, T, alpha, chunk_rows=4)
    (total * g_out.float()).backward()
    torch.testing.assert_close(total.double(), loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl_c.double(), kl.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce_c.double(), ce.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ch.grad.double(), ref_h.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(cw.grad.double(), ref_w.grad, rtol=1e-4, atol=1e-6)
    # the stage's wrapper over [B, T, D] hidden states counts the same tokens
    total_w, count_w, stats_w = chunked_distill_loss(h.float()[None], w.float(), t[None], y[None], T, alpha)
    assert count_w == n
    torch.testing.assert_close(total_w.double(), loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats_w["kl"].double(), kl.detach(), rtol=1e-5, atol=1e-6)
    # without autograd (evaluation) the same numbers
    with torch.no_grad():
        total_ng, _, _ = linear_distill_loss(h.float(), w.float(), t, y, T, alpha, chunk_rows=5)
    torch.testing.assert_close(total_ng.double(), loss.detach(), rtol=1e-5, atol=1e-6)


def test_the_kl_is_teacher_to_student_and_t_squared_keeps_the_gradient_scale():
    # an asymmetric pair: KL(p || q) != KL(q || p)
    s = torch.tensor([[[4.0, 0.0, 0.0, 0.0]]])
    t = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    y = torch.tensor([[0]])
    _, _, stats = distill_loss(s, t, y, 1.0, 1.0)
    pt, ps = torch.softmax(t[0, 0], -1), torch.softmax(s[0, 0], -1)
    forward_kl = (pt * (pt / ps).log()).sum()
    reverse_kl = (ps * (ps / pt).log()).sum()
    assert abs(forward_kl - reverse_kl) > 0.05
    torch.testing.assert_close(stats["kl"], forward_kl)
    # d/ds alpha T^2 KL_T = alpha T (softmax(s/T) - softmax(t/T)): at large T its scale ~ (s - t) / V,
    # independent of T (Hinton et al.); without T^2 it would fall as 1/T^2
    grads = []
    for T in (50.0, 200.0):
        ss = s.clone().requires_grad_()
        distill_loss(ss, t, y, T, 1.0)[0].backward()
        grads.append(ss.grad.norm().item())
    assert grads[0] == pytest.approx(grads[1], rel=0.03)


def test_the_teacher_is_frozen_in_eval_mode_and_gives_no_graph(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_model_config(50, max_seq_len=16, dim=32, n_heads=2, n_kv_heads=1)
    ckpt = save_checkpoint(tmp_path / "teacher", step=0, model=Transformer(cfg))
    teacher = Teacher(teacher_shape(str(ckpt)), torch.device("cpu"), torch.float32)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    x = torch.randint(0, 50, (2, 10))
    logits = teacher.logits(x)
    assert not logits.requires_grad and logits.shape == (2, 10, 50)
    torch.testing.assert_close(logits, load_model(ckpt)(x)[0].detach())


# --- per-token log-probabilities (DPO's path) --------------------------------------------------------


def test_linear_token_logps_and_gradients_equal_log_softmax_gather():
    torch.manual_seed(1)
    N, D, V = 11, 6, 9
    h, w = torch.randn(N, D, dtype=torch.float64), torch.randn(V, D, dtype=torch.float64)
    y = torch.randint(0, V, (N,))
    y[[2, 3, 10]] = -1
    upstream = torch.randn(N, dtype=torch.float64)  # per row, as DPO weighs each sequence
    rh, rw = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = ref_token_logps(rh, rw, y)
    (ref * upstream).sum().backward()
    ch, cw = h.float().requires_grad_(), w.float().requires_grad_()
    out = linear_token_logps(ch, cw, y, chunk_rows=4)
    (out * upstream.float()).sum().backward()
    assert out.dtype == torch.float32 and (out[y == -1] == 0).all()
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ch.grad.double(), rh.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(cw.grad.double(), rw.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(linear_token_logps(h.float(), w.float(), y, chunk_rows=3).double(),
                                   ref.detach(), rtol=1e-5, atol=1e-6)


# --- DPO ----------------------------------------------------------------------------------------------


def test_dpo_loss_and_metrics_equal_the_formula():
    torch.manual_seed(2)
    B, beta = 5, 0.3
    pol = (torch.randn(2 * B, dtype=torch.float64) * 4).requires_grad_()
    ref = torch.randn(2 * B, dtype=torch.float64) * 4
    pol_c, pol_r, ref_c, ref_r = pol[:B], pol[B:], ref[:B], ref[B:]
    want = -torch.log(torch.sigmoid(beta * ((pol_c - ref_c) - (pol_r - ref_r))))
    g_want, = torch.autograd.grad(want.sum(), pol)
    total, n, stats = dpo_loss(pol, ref, beta)
    g, = torch.autograd.grad(total, pol)
    assert n == B
    torch.testing.assert_close(total, want.sum().detach())
    torch.testing.assert_close(g, g_want)
    chosen_reward, rejected_reward = beta * (pol_c - ref_c), beta * (pol_r - ref_r)  # TRL's rewards
    torch.testing.assert_close(beta * stats["margin"], (chosen_reward - rejected_reward).sum().detach())
    assert stats["accuracy"].item() == int((chosen_reward > rejected_reward).sum())
    torch.testing.assert_close(stats["logp_gap"], (pol_c - pol_r).sum().detach())
    # the loss starts at log 2 when the policy is the reference
    total0, _, stats0 = dpo_loss(ref, ref, beta)
    assert total0.item() == pytest.approx(B * 0.6931471805599453) and stats0["accuracy"].item() == 0


def test_sequence_logps_sum_the_answer_tokens_only(tok, parent):
    """Against the model run on each prompt + answer alone (no padding), summing log p(token) from the
    first answer token (after the prompt's <|assistant|>) to the closing <|endoftext|>."""
    prompts = [[{"role": "user", "content": "What did Apple close at?"}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "CPI?"},
                {"role": "assistant", "content": "3.4%."}, {"role": "user", "content": "And the funds rate?"}]]
    answers = [("Apple closed at $189.25.", "$1."), ("5.25%-5.50%.", "Rates were 1.00% at the time.")]
    pairs = [Pair(p, [{"role": "assistant", "content": c}], [{"role": "assistant", "content": r}])
             for p, (c, r) in zip(prompts, answers)]
    encoded, _ = encode_pairs(tok, pairs, 128)
    batch = collate_pairs(encoded, pad_id_of(tok))
    model = load_model(parent)
    with torch.no_grad():
        got = sequence_logps(model, batch["x"], batch["y"])
        want = []
        for side in (0, 1):
            for pair in pairs:
                prompt, completion = pair.prompt, (pair.chosen, pair.rejected)[side]
                ids = encode_chat(tok, prompt + completion).ids
                start = len(prompt_ids(tok, prompt))
                assert ids[start - 1] == tok.special("<|assistant|>") and ids[-1] == tok.eot_id
                x = torch.tensor(ids[:-1])[None]
                lp = torch.log_softmax(model(x)[0][0].double(), -1)
                want.append(sum(lp[j - 1, ids[j]] for j in range(start, len(ids))))
    torch.testing.assert_close(got.double(), torch.stack(want), rtol=1e-5, atol=1e-4)
    assert (batch["x"][0] != batch["x"][2]).any() and (batch["y"] == -1).any()  # padded rows were involved


# --- SFT: packing ---------------------------------------------------------------------------------------


def test_a_packed_conversation_cannot_see_the_ones_before_it(tok, parent):
    examples, _ = encode_sft(tok, [chat_from_record(c, "test") for c in CHATS], seq_len=128)
    rows = pack(examples, 128)
    row = rows[0]
    docs = torch.tensor(row.doc_ids)
    assert docs.max() >= 1  # several conversations share the row
    model = load_model(parent)
    batch = collate([row], pad_id=0, packed=True)
    changed = batch["x"].clone()
    first = docs == 0
    changed[0, first] = (changed[0, first] + 7) % tok.vocab_size  # other tokens in the first conversation
    with torch.no_grad():
        a = model(batch["x"], doc_ids=batch["doc_ids"])[0]
        b = model(changed, doc_ids=batch["doc_ids"])[0]
        # each later conversation scores exactly as it would alone in its own row
        for d in range(1, int(docs.max()) + 1):
            where = (docs == d).nonzero().squeeze(1)
            alone = model(batch["x"][:, where])[0]
            torch.testing.assert_close(a[0, where], alone[0], rtol=1e-4, atol=1e-5)
    later = ~first
    torch.testing.assert_close(a[0, later], b[0, later], rtol=0, atol=0)
    assert not torch.allclose(a[0, first], b[0, first])
    # the loss counts exactly the assistant labels of every conversation in the row
    assert sft_loss(model, batch)[1] == sum(sum(y != -1 for y in ex.labels) for ex in examples[:int(docs.max()) + 1])


# --- gradient accumulation -------------------------------------------------------------------------------


def test_grad_accumulation_optimises_the_mean_over_tokens_not_the_mean_of_means(tok_dir, tok, parent, tmp_path):
    """A step of batch 2 and one of batch 1 x grad_accum 2 (the same two rows, of very different answer
    lengths) both take the gradient of the mean over the step's answer tokens, not of the mean of the
    micro-batches' means."""
    from tenali_model.posttrain.config import SFTConfig
    from tenali_model.posttrain.sft import train
    chats = [{"instruction": "Q?", "output": "A."},
             {"instruction": "Summarise.", "output": "Revenue rose 8% on higher services sales and the "
                                                     "margin widened by two points over the prior year."}]
    f = write_jsonl(tmp_path / "c.jsonl", chats)
    results = []
    for name, batch_size, accum in (("one", 2, 1), ("accum", 1, 2)):
        out = tmp_path / name
        cfg = SFTConfig(init_from=str(parent), out_dir=str(out), train_files=[f], tokenizer=str(tok_dir),
                        steps=1, batch_size=batch_size, grad_accum=accum, lr=1e-2, min_lr=1e-2, warmup_steps=0,
                        schedule="constant", packing=False, log_every=1, device="cpu", num_threads=1, seed=3,
                        grad_clip=0.0)
        s = train(cfg)
        rec = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][0]
        results.append((rec["loss"], rec["grad_norm"]))
    (loss_a, norm_a), (loss_b, norm_b) = results
    # the reference: one mean over every answer token of the two rows, by hand
    examples, _ = encode_sft(tok, [chat_from_record(c, "t") for c in chats], 128)
    n_tokens = [sum(y != -1 for y in ex.labels) for ex in examples]
    assert max(n_tokens) > 5 * min(n_tokens)
    sums, grads = [], []
    for ex in examples:
        model = load_model(parent)
        logits = model(torch.tensor([ex.input_ids]))[0][0]
        ce = F.cross_entropy(logits, torch.tensor(ex.labels), ignore_index=-1, reduction="sum")
        ce.backward()
        sums.append(ce.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    mean_over_tokens = (grads[0] + grads[1]) / sum(n_tokens)
    mean_of_means = (grads[0] / n_tokens[0] + grads[1] / n_tokens[1]) / 2
    assert mean_of_means.norm().item() != pytest.approx(mean_over_tokens.norm().item(), rel=0.05)
    for loss, norm in ((loss_a, norm_a), (loss_b, norm_b)):
        assert loss == pytest.approx(sum(sums) / sum(n_tokens), rel=1e-5)
        assert norm == pytest.approx(mean_over_tokens.norm().item(), rel=1e-4)  # the gradient before AdamW
