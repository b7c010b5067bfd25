"""SFT: assistant-only labels, packed == padded, LoRA merge, exact resume, bad files write nothing."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import CHATS, write_jsonl
from tenali_model.chat import encode_chat
from tenali_model.checkpoint import load_meta, load_model
from tenali_model.config import ConfigError
from tenali_model.posttrain.config import LoraSettings, SFTConfig
from tenali_model.posttrain.data import (DataError, chat_from_record, collate, encode_sft, load_chats,
                                         pack, single_rows)
from tenali_model.posttrain.lora import apply_lora, load_adapter, merged_state_dict
from tenali_model.posttrain.sft import main, sft_loss, train
from tenali_model.tokenizer import ASSISTANT, EOT
from tm_helpers import assert_same_tensors


def sft_config(parent, tok_dir, files, out, **kw):
    base = dict(init_from=str(parent), out_dir=str(out), train_files=files, tokenizer=str(tok_dir),
                steps=8, batch_size=2, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=2,
                ckpt_every=4, device="cpu", num_threads=1, seed=3)
    base.update(kw)
    return SFTConfig(**base)


def test_labels_are_exactly_the_next_assistant_tokens(tok):
    chat = CHATS[3]["messages"]
    enc = encode_chat(tok, chat)
    (ex,), _ = encode_sft(tok, [chat], seq_len=128)
    assert ex.input_ids == enc.ids[:-1]
    want = [tok.encode(m["content"]) + [tok.special(EOT)] for m in chat if m["role"] == "assistant"]
    labelled = [y for y in ex.labels if y != -1]
    assert labelled == [t for w in want for t in w]
    # the first label of each answer sits on the <|assistant|> marker (predicting the answer's first
    # token), the last on the answer's last token (predicting <|endoftext|>): not one off either way
    starts = [i for i, y in enumerate(ex.labels) if y != -1 and (i == 0 or ex.labels[i - 1] == -1)]
    assert [ex.input_ids[i] for i in starts] == [tok.special(ASSISTANT)] * 2
    ends = [i for i, y in enumerate(ex.labels) if y != -1 and (i + 1 == len(ex.labels) or ex.labels[i + 1] == -1)]
    assert [ex.labels[i] for i in ends] == [tok.special(EOT)] * 2
    # a user turn's tokens never carry a label
    user_ids = set(tok.encode("Fed funds?"))
    assert not {y for y in ex.labels if y != -1} & user_ids - {t for w in want for t in w}


def test_packed_and_padded_give_the_same_loss_and_gradients(tok, parent):
    examples, _ = encode_sft(tok, [chat_from_record(c, "test") for c in CHATS], seq_len=128)
    packed_rows, padded_rows = pack(examples, 128), single_rows(examples)
    assert len(packed_rows) < len(padded_rows)  # several conversations share a row
    results = []
    for rows, packed in ((packed_rows, True), (padded_rows, False)):
        model = load_model(parent)
        batch = collate(rows, pad_id=0, packed=packed)
        s, n, _ = sft_loss(model, batch)
        (s / n).backward()
        results.append((s.item() / n, n, [p.grad.clone() for p in model.parameters()]))
    (loss_a, n_a, g_a), (loss_b, n_b, g_b) = results
    assert n_a == n_b == sum(sum(y != -1 for y in ex.labels) for ex in examples)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # without the document mask the packed row's later conversations see the earlier ones
    model = load_model(parent)
    leaky = collate(packed_rows, pad_id=0, packed=False)
    s, n, _ = sft_loss(model, leaky)
    assert abs(s.item() / n - loss_b) > 1e-4


def test_lora_merged_and_unmerged_give_the_same_logits(tok, parent, tmp_path):
    torch.manual_seed(0)
    model = apply_lora(load_model(parent), LoraSettings())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n in ("tok_embeddings.weight",) for n in trainable)
    assert {n.split(".")[3] for n in trainable if ".lora_" in n} == {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}
    with torch.no_grad():  # B starts at zero: give the adapters and the head a real update
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    x = torch.tensor([tok.encode("Apple closed at $189.25 and the curve stayed inverted.")])
    merged = load_model(parent)
    merged.load_state_dict(merged_state_dict(model))
    with torch.no_grad():
        torch.testing.assert_close(merged(x)[0], model(x)[0], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(load_model(parent)(x)[0], model(x)[0], atol=1e-3)


def test_lora_sft_resumes_exactly_and_merges_into_an_exportable_checkpoint(tok_dir, tok, parent, chat_file,
                                                                          tmp_path):
    transformers = pytest.importorskip("transformers")
    lora = LoraSettings(r=4, alpha=8)
    full = train(sft_config(parent, tok_dir, [chat_file], tmp_path / "full", lora=lora, val_files=[chat_file]))
    assert full["complete"] and full["final_loss"] < full["initial_loss"]
    first = train(sft_config(parent, tok_dir, [chat_file], tmp_path / "split", lora=lora,
                             val_files=[chat_file]), stop_at=4)
    assert first["step"] == 4 and not first["complete"]
    second = train(sft_config(parent, tok_dir, [chat_file], tmp_path / "split", lora=lora, val_files=[chat_file]))
    assert second["resumed_from_step"] == 4 and second["step"] == 8
    assert_same_tensors(tmp_path / "full", tmp_path / "split", ["step_00000008/model.safetensors",
                        "adapters/step_00000008/adapter_model.safetensors", "adapters/step_00000008/head.safetensors"])

    ckpt = tmp_path / "full" / "step_00000008"
    meta = load_meta(ckpt)
    assert meta["stage"] == "sft" and meta["parent_checkpoint"] == str(parent)
    assert meta["data_files"] == [str(tmp_path / "chats.jsonl")] * 2 and meta["lora"]["r"] == 4
    assert meta["adapter"] == str(tmp_path / "full" / "adapters" / "step_00000008")
    # the adapter alone, loaded on the parent, gives the merged checkpoint's logits
    x = torch.tensor([tok.encode("What did Apple close at?")])
    adapted = apply_lora(load_model(parent), lora)
    load_adapter(adapted, meta["adapter"])
    merged = load_model(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(adapted.eval()(x)[0], merged(x)[0], rtol=1e-5, atol=1e-5)
    # and the merged checkpoint is a plain Tenali checkpoint that exports to transformers
    from tenali_model.hf import export_hf
    out = export_hf(ckpt, tmp_path / "hf", tokenizer_model=tok_dir / "tokenizer.model")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, merged(x)[0], rtol=0, atol=1e-4)


def test_a_corrupt_newest_checkpoint_resumes_from_the_one_before(tok_dir, parent, chat_file, tmp_path, capsys):
    """A flipped byte in the newest checkpoint's optimizer state is caught by its checksum; the stage
    resumes from the checkpoint before it (its adapter kept beside it) and ends where an uninterrupted
    run ends, bit for bit."""
    lora = LoraSettings(r=4, alpha=8)
    full = train(sft_config(parent, tok_dir, [chat_file], tmp_path / "full", lora=lora, ckpt_every=2))
    train(sft_config(parent, tok_dir, [chat_file], tmp_path / "split", lora=lora, ckpt_every=2), stop_at=4)
    state = tmp_path / "split" / "step_00000004" / "train_state.pt"
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    second = train(sft_config(parent, tok_dir, [chat_file], tmp_path / "split", lora=lora, ckpt_every=2))
    assert "cannot resume from step_00000004" in capsys.readouterr().out
    assert second["resumed_from_step"] == 2 and second["complete"] and full["complete"]
    assert_same_tensors(tmp_path / "full", tmp_path / "split", ["step_00000008/model.safetensors"])

def test_lora_with_bf16_frozen_weights_trains_as_float32_ones_under_bf16_autocast(tok_dir, parent, chat_file,
                                                                                     tmp_path, capsys):
    """`lora.base_dtype: "bfloat16"` (what "auto" picks under bf16 compute) only changes where the
    frozen weights' bf16 rounding happens (once, at load, instead of at every use under autocast):
    the same losses and, merged into the parent's float32 weights, the same checkpoint bit for bit.
    Merging into the bf16 copies instead would round every adapted weight and fail this."""
    from tenali_model.posttrain.loop import build_student

    runs = {}
    for base in ("float32", "auto"):
        lora = LoraSettings(r=4, alpha=8, base_dtype=base)
        runs[base] = train(sft_config(parent, tok_dir, [chat_file], tmp_path / base, lora=lora, dtype="bfloat16",
                                      steps=4, ckpt_every=0))
    assert runs["auto"]["final_loss"] == runs["float32"]["final_loss"] < runs["float32"]["initial_loss"]
    assert_same_tensors(tmp_path / "float32", tmp_path / "auto", ["step_00000004/model.safetensors"])
    for dtype, held in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):  # base_dtype "auto"
        model = build_student(sft_config(parent, tok_dir, [chat_file], tmp_path / "x", dtype=dtype,
                                         lora=LoraSettings(r=4, alpha=8)), parent, torch.device("cpu"))
        assert model.get_submodule("layers.0.attn.wq").get_base_layer().weight.dtype == held
    dtypes = {n: p.dtype for n, p in build_student(sft_config(
        parent, tok_dir, [chat_file], tmp_path / "x", dtype="bfloat16", lora=LoraSettings(base_dtype="bfloat16")),
        parent, torch.device("cpu")).named_parameters()}
    assert dtypes["layers.0.attn.wq.base_layer.weight"] == torch.bfloat16
    assert dtypes["layers.0.attn.wq.lora_A.default.weight"] == torch.float32
    assert dtypes["tok_embeddings.weight"] == dtypes["layers.0.attn_norm.weight"] == torch.float32  # the head: tied
    # bf16 weights need bf16 compute: refused at validation, or (dtype auto on a CPU) before any compute
    with pytest.raises(ConfigError, match="needs bf16 compute"):
        sft_config(parent, tok_dir, [chat_file], tmp_path / "y", dtype="float32",
                   lora=LoraSettings(base_dtype="bfloat16")).validate()
    with pytest.raises(ConfigError, match="base_dtype must be"):
        LoraSettings(base_dtype="float16").validate()
    sft_config(parent, tok_dir, [chat_file], tmp_path / "cpu", dtype="auto",
               lora=LoraSettings(base_dtype="bfloat16")).to_json(tmp_path / "cpu.json")
    assert main(["--config", str(tmp_path / "cpu.json")]) == 2
    assert "dtype 'auto' on cpu computes in float32" in capsys.readouterr().err
    assert not (tmp_path / "cpu").exists()


def test_full_finetune_learns_the_answers(tok_dir, parent, chat_file, tmp_path):
    s = train(sft_config(parent, tok_dir, [chat_file], tmp_path / "run", steps=30, ckpt_every=0,
                         log_every=5, val_files=[chat_file], packing=False))
    assert s["val_loss"] < 0.6 * s["initial_loss"]
    assert s["trainable_params"] == s["num_params"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [30]


def test_parquet_and_alpaca_records_read_like_jsonl(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"instruction": "Q?", "input": "ctx", "output": "A."}]),
                   tmp_path / "a.parquet")
    (chat,) = load_chats([tmp_path / "a.parquet"])
    assert chat == [{"role": "user", "content": "Q?\n\nctx"}, {"role": "assistant", "content": "A."}]


BAD = [
    ('{"messages": [{"role": "user", "content": "hi"}', "line 2", "not valid JSON"),
    ({"instruction": "Q?"}, "line 2", "field 'output'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}, "line 2",
     "field messages[1].role"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "line 2", "no assistant message"),
    ({"prompt": "x", "completion": "y"}, "line 2", "expected a 'messages' field"),
    ({"instruction": "Q?", "output": 3}, "line 2", "field 'output': expected a string"),
    # an empty answer (as Alpaca's empty output) is refused, not trained as an immediate stop
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}, "line 2",
     "field messages[1].content"),
    # a role that is not a string (unhashable) is named, not a TypeError traceback
    ({"messages": [{"role": ["user"], "content": "q"}, {"role": "assistant", "content": "a"}]}, "line 2",
     "field messages[0].role"),
]


@pytest.mark.parametrize("record,line,field", BAD)
def test_malformed_files_name_file_line_field_and_write_nothing(record, line, field, tok_dir, parent, tmp_path,
                                                               capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [CHATS[1], record, CHATS[0]])
    out = tmp_path / "out"
    cfg = sft_config(parent, tok_dir, [bad], out)
    cfg.to_json(tmp_path / "sft.json")
    assert main(["--config", str(tmp_path / "sft.json")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{line}" in err and field in err, err
    assert not out.exists()


def test_invalid_utf8_names_the_line(tmp_path):
    f = tmp_path / "u.jsonl"
    f.write_bytes(json.dumps(CHATS[1]).encode() + b"\n" + b'{"instruction": "Q\xff?", "output": "A."}\n')
    with pytest.raises(DataError, match=r"u.jsonl:line 2: not valid UTF-8"):
        load_chats([f])


def test_a_pretty_printed_json_array_is_named_as_not_json_lines(tmp_path):
    f = tmp_path / "alpaca.json"  # Alpaca's own data file is an indented JSON array
    f.write_text(json.dumps([CHATS[1]], indent=2))
    with pytest.raises(DataError, match=r"alpaca.json:line 1: .*records must be JSON Lines"):
        load_chats([f])


def test_jsonl_nulls_read_as_absent(tmp_path):
    f = write_jsonl(tmp_path / "n.jsonl", [{"instruction": "Q?", "input": None, "output": "A.", "messages": None}])
    assert load_chats([f]) == [chat_from_record({"instruction": "Q?", "output": "A."}, "x")]


def test_parquet_columns_a_row_does_not_use_read_as_absent(tmp_path):
    """A Parquet file mixing the record formats has every column in every row, null where unused."""
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
                        ("messages", pa.list_(message))])
    rows = [{"instruction": "Q?", "output": "A."}, CHATS[3]]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "m.parquet")
    assert load_chats([tmp_path / "m.parquet"]) == [chat_from_record(r, "x") for r in rows]


def test_parquet_errors_name_the_row(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"instruction": "Q?", "output": "A."}, {"instruction": "", "output": "B"}]),
                   tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b.parquet:row 2: field 'instruction': is empty"):
        load_chats([tmp_path / "b.parquet"])


def test_config_round_trip_and_errors(tmp_path, parent, tok_dir, chat_file):
    cfg = sft_config(parent, tok_dir, [chat_file], tmp_path / "o", lora=LoraSettings())
    cfg.to_json(tmp_path / "c.json")
    assert SFTConfig.from_json(tmp_path / "c.json") == cfg
    d = json.loads((tmp_path / "c.json").read_text())
    for change, match in (({"stepz": 1}, "unknown field"), ({"steps": "10"}, "steps must be int"),
                          ({"lora": {"r": 4, "targets": []}}, "unknown field"),
                          ({"format_version": 2}, "format_version 2"), ({"schedule": "step"}, "schedule"),
                          # NaN passed the `< 0` checks (JSON carries it); a parent inside out_dir would be
                          # taken for the stage's own checkpoint to resume
                          ({"weight_decay": float("nan")}, "weight_decay must be a finite"),
                          ({"lr": float("inf")}, "lr must be a finite"),
                          ({"init_from": str(tmp_path / "o" / "step_00000002")}, "a checkpoint folder of out_dir")):
        with pytest.raises(ConfigError, match=match):
            SFTConfig.from_dict({**d, **change}).validate()
    with pytest.raises(ConfigError, match="missing required field"):
        SFTConfig.from_dict({k: v for k, v in d.items() if k != "train_files"})
    # a parent deeper inside out_dir is not one of its checkpoints (the pipeline's distillation keeps its
    # student_init/step_00000000 there)
    SFTConfig.from_dict({**d, "init_from": str(tmp_path / "o" / "student_init" / "step_00000000")}).validate()


def test_a_diverged_step_stops_the_stage_before_it_is_saved(tok_dir, parent, tmp_path, monkeypatch):
    """As the pretraining trainer (test_model_train.py): weights turned to NaN at step 3 are found on
    the saving step 4, not on the logging step 5, and never saved."""
    from tenali_model.checkpoint import list_checkpoints
    from tenali_model.posttrain import loop
    from test_model_train import poison_gradients_at

    poison_gradients_at(monkeypatch, loop, call=3)
    f = write_jsonl(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "sft"
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 4; the last good checkpoint is .*step_00000002"):
        train(sft_config(parent, tok_dir, [f], out, steps=6, ckpt_every=2, log_every=5, keep_last=1))
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002"]
