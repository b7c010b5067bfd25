"""What `tenali serve` loads: the serving dtype reaches the device in one move, an imported base's own
end of text ends an answer, and a broken releases/LATEST.json is explained, not a traceback."""

import json

import pytest
import torch

from tenali_model.checkpoint import load_model
from tenali_model.serve.loading import LoadError, latest_release_dir, load_hf_model, load_served


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory, ckpt):
    """The tiny model exported as a Hugging Face Llama with a tokenizer.json of its own that has no
    <|endoftext|> (a base model's: its end of text is "</s>", which config.json names)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tenali_model.hf import export_hf
    from ts_helpers import FINANCE_TEXT

    folder = export_hf(ckpt, tmp_path_factory.mktemp("hf") / "base")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([FINANCE_TEXT] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"]))
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _moves(monkeypatch):
    """The parameter dtypes of every module moved to (or allocated on) a device other than the CPU."""
    moves = []
    real_to, real_empty = torch.nn.Module.to, torch.nn.Module.to_empty

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and device.type != "cpu":
            moves.append({p.dtype for p in self.parameters()})
        return real_to(self, *args, **kwargs)

    def to_empty(self, *, device, recurse=True):
        if torch.device(device).type != "cpu":
            moves.append({p.dtype for p in self.parameters()})
        return real_empty(self, device=device, recurse=recurse)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.setattr(torch.nn.Module, "to_empty", to_empty)
    return moves


@pytest.mark.parametrize("source", ["checkpoint", "hf"])
def test_a_bfloat16_model_reaches_the_device_in_bfloat16_and_unchanged(ckpt, tok_path, hf_base, monkeypatch, source):
    """Cast on the CPU, moved once: the device never holds a float32 copy (a 7B needs 14 GB to load in
    bfloat16, not 28); the weights and outputs are those of the float32 model cast afterwards."""
    path = ckpt if source == "checkpoint" else hf_base
    want = load_model(ckpt).to(torch.bfloat16)
    got = load_served(path, tokenizer=tok_path, dtype=torch.bfloat16).model
    assert {p.dtype for p in got.parameters()} == {torch.bfloat16}
    theirs = want.state_dict()
    for name, tensor in got.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert got.rope_cos.dtype == want.rope_cos.dtype and torch.equal(got.rope_cos, want.rope_cos)
    idx = torch.tensor([[1, 5, 9, 30, 2]])
    assert torch.equal(got(idx)[0], want(idx)[0])
    moves = _moves(monkeypatch)  # "meta" stands in for an accelerator here
    model = load_served(path, tokenizer=tok_path, device="meta", dtype=torch.bfloat16).model
    assert next(model.parameters()).device.type == "meta"
    assert moves == [{torch.bfloat16}]


def test_load_hf_model_defaults_to_float32(hf_base, ckpt):
    got = load_hf_model(hf_base)
    want = load_model(ckpt)
    idx = torch.tensor([[1, 5, 9, 30]])
    assert next(got.parameters()).dtype == torch.float32
    assert torch.allclose(got(idx)[0], want(idx)[0], atol=1e-6)


def test_an_imported_base_stops_at_its_own_end_of_text(hf_base):
    """Its tokenizer has no <|endoftext|>; config.json's eos_token_id ends a completion (and a list
    of them, as Llama 3's, is read too)."""
    from fastapi.testclient import TestClient

    from tenali_model.serve.app import ServeOptions, create_app

    served = load_served(hf_base)
    assert served.tokenizer.token_id("<|endoftext|>") is None and served.eos_ids == ()
    ids = served.tokenizer.encode("Apple closed at")
    vocab = served.tokenizer.vocab_size
    first = int(served.model(torch.tensor([ids]), last_only=True)[0][0, -1, :vocab].argmax())
    config = json.loads((hf_base / "config.json").read_text())
    try:
        for eos in (first, [vocab - 1, first]):
            (hf_base / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}))
            served = load_served(hf_base)
            assert first in served.eos_ids
            with TestClient(create_app(served, ServeOptions(api_key=""))) as c:
                got = c.post("/v1/completions", json={"prompt": ids, "max_tokens": 10, "temperature": 0}).json()
            assert got["choices"][0]["finish_reason"] == "stop" and got["usage"]["completion_tokens"] == 1
    finally:
        (hf_base / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("content, says", [("{not json", "is not valid JSON"), ("{}", "names no release"),
                                           ('{"release_id": 3}', "names no release"), ("[]", "names no release"),
                                           ('{"release_id": "../../elsewhere"}', "not a folder name")])
def test_a_broken_latest_json_is_explained(tmp_path, capsys, content, says):
    from tenali_model.cli import main

    pointer = tmp_path / "releases" / "LATEST.json"
    pointer.parent.mkdir()
    pointer.write_text(content)
    with pytest.raises(LoadError, match=says) as err:
        latest_release_dir(tmp_path)
    assert str(pointer) in str(err.value) and "model_release" in str(err.value)
    with pytest.raises(LoadError, match=says):
        load_served(tmp_path)
    assert main(["serve", "--lake", str(tmp_path)]) == 2
    assert says in capsys.readouterr().err


def _shrunk_q_proj(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    name = next(k for k in state if "q_proj" in k)
    state[name] = state[name][:-4].contiguous()
    save_file(state, str(folder / "model.safetensors"))


@pytest.mark.parametrize("case, says", [
    ("garbage weights", "the weights cannot be read (SafetensorError"),
    ("truncated weights", "the weights cannot be read (SafetensorError"),
    ("a shrunk tensor", "weights do not match config.json"),
    ("corrupt config.json", "config.json is not valid JSON"),
    ("config.json a list", "config.json holds a JSON list, not an object"),
    ("a config value of the wrong type", "config.json is not a usable model config: TypeError"),
    ("corrupt release.json", "release.json is not valid JSON"),
    ("release.json a list", "release.json holds a JSON list, not an object"),
])
def test_a_broken_release_folder_is_explained(tmp_path, hf_base, capsys, monkeypatch, case, says):
    """A release folder copied in part or edited by hand: a LoadError naming the file, and `tenali
    serve` exits 2 with it. Were: a SafetensorError or RuntimeError traceback, an AttributeError for a
    release.json that is not an object, a TypeError for a config value, a bare JSON message."""
    import shutil

    import uvicorn

    from tenali_model.cli import main

    folder = shutil.copytree(hf_base, tmp_path / "release")
    weights, config = folder / "model.safetensors", folder / "config.json"
    edit = {
        "garbage weights": lambda: weights.write_bytes(b"garbage" * 10),
        "truncated weights": lambda: weights.write_bytes(weights.read_bytes()[:1000]),
        "a shrunk tensor": lambda: _shrunk_q_proj(folder),
        "corrupt config.json": lambda: config.write_text('{"model_type": "llama", '),
        "config.json a list": lambda: config.write_text('["model_type"]'),
        "a config value of the wrong type": lambda: config.write_text(
            json.dumps({**json.loads(config.read_text()), "hidden_size": "big"})),
        "corrupt release.json": lambda: (folder / "release.json").write_text("{oops"),
        "release.json a list": lambda: (folder / "release.json").write_text("[]"),
    }[case]
    edit()
    with pytest.raises(LoadError) as err:
        load_served(folder)
    assert says in str(err.value) and str(folder) in str(err.value)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served a broken folder"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served a broken folder"))  # what run_server calls
    assert main(["serve", str(folder), "--device", "cpu"]) == 2
    assert says in capsys.readouterr().err


def test_serve_refuses_a_device_this_machine_lacks(ckpt, tok_path, capsys, monkeypatch):
    """--device cuda on a machine without one (or cuda:N past its count) was torch's AssertionError
    traceback, after reading the weights; --device with a typo was a RuntimeError traceback."""
    import uvicorn

    from tenali_model.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))  # what run_server calls
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", missing]) == 2
    assert f"--device {missing}: this machine has" in capsys.readouterr().err
    assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "gpu"]) == 2
    assert "--device gpu: not a device" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, says", [
    ("--max-batch", "0", "must be at least 1"), ("--max-queue", "-1", "must be at least 0"),
    ("--threads", "-1", "must be at least 0"), ("--request-timeout", "0", "must be above 0"),
    ("--request-timeout", "nan", "must be above 0"), ("--prefill-padding", "-0.5", "must be at least 0"),
    ("--max-batch", "two", "invalid int value"),
])
def test_serve_refuses_numbers_that_could_not_serve(ckpt, tok_path, capsys, monkeypatch, flag, value, says):
    """--max-batch 0 served nothing (every request waited for a slot until its time limit), a time limit
    of 0 ended every request at once; --threads -1 and a negative --prefill-padding were tracebacks or
    errors after the weights had loaded. argparse refuses each, naming the flag, before any loading."""
    import uvicorn

    from tenali_model.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))  # what run_server calls
    assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "cpu", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {says}" in err
