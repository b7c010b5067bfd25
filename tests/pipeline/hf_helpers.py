"""A Hugging Face base model made here (never downloaded): a byte-level BPE tokenizer.json trained on
the given texts, as GPT-2 / Llama-3 style bases have, and a tiny LlamaForCausalLM around it."""

from __future__ import annotations

import json
from pathlib import Path


def byte_level_tokenizer(texts: list[str], vocab_size: int = 400, specials=("<unk>", "<s>", "</s>")):
    """A byte-level BPE (round-trips any text) whose special tokens are `specials`; no <|endoftext|>
    unless asked for, so the end-of-text id comes from the base's eos token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return tok


def write_base(folder: Path, tok, eos: str = "</s>", dim: int = 64, layers: int = 2, max_seq_len: int = 128,
               train_texts: list[str] = (), steps: int = 0, seed: int = 0, batch: int = 8, seq_len: int = 64):
    """A tiny Llama with `tok`, saved the way a downloaded base folder is laid out; with `train_texts`
    it is first trained for `steps` (so it knows the text better than a random start); returns the model."""
    import numpy as np
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": "<s>", "unk_token": "<unk>"}))
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=dim, intermediate_size=2 * dim,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=max_seq_len, tie_word_embeddings=False,
                                   eos_token_id=tok.token_to_id(eos))
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    if train_texts and steps:
        eot = tok.token_to_id(eos)
        ids = np.array([t for e in tok.encode_batch(list(train_texts), add_special_tokens=False) for t in [*e.ids, eot]])
        rng = np.random.default_rng(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            starts = rng.integers(0, len(ids) - seq_len - 1, size=batch)
            x = torch.tensor(np.stack([ids[s:s + seq_len] for s in starts]), dtype=torch.long)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(folder)
    return model.eval()
