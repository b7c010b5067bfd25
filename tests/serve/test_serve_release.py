"""The model_release asset on a tiny checkpoint built directly: export, card, LATEST.json, the refusal check,
and `tenali serve` finding the release."""

import json

import torch

from tenali_pipeline.defs.release.assets import LATEST_RELEASE_KEY
from ts_helpers import materialise_release, record_evaluation


def test_release_exports_a_card_and_serves_and_a_worse_one_is_refused(lake_setup, served):
    from tenali_model.serve.loading import latest_release_dir, load_served

    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    result, check = materialise_release(instance, resources)
    assert result.success and check.passed
    pointer = lake.read_json(LATEST_RELEASE_KEY)
    folder = latest_release_dir(lake.root)
    assert folder.name == pointer["release_id"] and pointer["checkpoint_key"] == keys[0]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
              "README.md", "release.json"):
        assert (folder / f).is_file(), f
    card = (folder / "README.md").read_text()
    for text in ("## Architecture", "## Tokenizer", "## Training data and lineage", "2012-01-01",
                 "## Evaluation", "bits_per_byte", "1.5000", "val_loss/market", "## Intended use and limits"):
        assert text in card, text
    from tenali_model.chat import HF_CHAT_TEMPLATE  # a converted sentencepiece tokenizer's (hf._chat_template)
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == HF_CHAT_TEMPLATE
    release = json.loads((folder / "release.json").read_text())
    assert release["evaluation"]["bits_per_byte"] == 1.5 and release["promoted"]

    # what `tenali serve` (no PATH) loads: the same weights as the checkpoint, from the HF export
    got = load_served(lake.root)
    assert got.name == pointer["release_id"] and got.release["evaluation"]["bits_per_byte"] == 1.5
    from tenali_model.checkpoint import load_model
    want = load_model(lake.local_dir(keys[0]))
    idx = torch.tensor([[1, 5, 9, 30]])
    assert torch.allclose(got.model(idx)[0], want(idx)[0], atol=1e-5)

    # a worse checkpoint: written for inspection, refused by the check, LATEST.json unchanged
    record_evaluation(instance, lake, keys[1], 2.00)
    result, check = materialise_release(instance, resources, pick="latest")
    assert not check.passed
    assert lake.read_json(LATEST_RELEASE_KEY) == pointer
    # "best" picks the better one again
    result, check = materialise_release(instance, resources, pick="best")
    assert check.passed and lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[0]


def test_serve_without_a_release_says_what_to_do(tmp_path):
    from tenali_model.cli import main

    assert main(["serve", "--lake", str(tmp_path)]) == 2


def test_serve_refuses_cuda_graphs_on_the_cpu_and_compiling_without_one(ckpt, capsys):
    from tenali_model.cli import main

    assert main(["serve", str(ckpt), "--device", "cpu", "--cuda-graph"]) == 2
    assert "--cuda-graph needs a CUDA device" in capsys.readouterr().err
    assert main(["serve", str(ckpt), "--device", "cpu", "--compile"]) == 2
    assert "--compile compiles the CUDA-graph decoding step: give --cuda-graph too" in capsys.readouterr().err


def test_the_servers_own_log_lines_reach_the_console(capsys):
    """`tenali serve` hands uvicorn a logging config that shows the engine's lines (its decoding step
    ready, in how long) at --log-level info, in uvicorn's format, once however often it is applied;
    warnings only at --log-level warning."""
    import logging
    import logging.config

    from tenali_model.serve import log_config

    log = logging.getLogger("tenali.serve")
    logger = logging.getLogger("tenali")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        logging.config.dictConfig(log_config("info"))
        logging.config.dictConfig(log_config("info"))
        log.info("decoding step ready in %.1f s (%s)", 12.5, "compiled, CUDA graph")
        err = capsys.readouterr().err
        assert err.count("decoding step ready in 12.5 s (compiled, CUDA graph)") == 1
        assert err.startswith("INFO:")
        logging.config.dictConfig(log_config("warning"))
        log.info("not shown")
        assert "not shown" not in capsys.readouterr().err
    finally:
        logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_a_checkpoint_of_another_tokenizer_is_never_released(lake_setup):
    """Evaluations record the tokenizer they scored with; the release picks only among checkpoints of
    the lake's tokenizer (an older lineage's, exported with today's tokenizer, would read its ids as
    other text), however good its figures, and says so when one is named."""
    lake, keys, instance, resources = lake_setup
    ours = lake.read_json("shards/manifest.json")["tokenizer"]["sha256"]
    record_evaluation(instance, lake, keys[0], 1.50, tokenizer_sha256=ours)
    record_evaluation(instance, lake, keys[1], 0.50, tokenizer_sha256="f" * 64)  # better, but another vocabulary
    result, _ = materialise_release(instance, resources, pick="best")
    assert result.success and lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[0]
    result, _ = materialise_release(instance, resources, checkpoint_key=keys[1])
    assert not result.success
    assert "trained with another tokenizer" in result.get_step_failure_events()[0].step_failure_data.error.message


def test_auto_releases_a_dpo_model_only_when_it_follows_the_newest_sft_model(lake_setup):
    """DPO runs on the SFT model before it: a DPO evaluation older than the newest SFT one belongs to
    an SFT model since replaced, and is not preferred to it."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50, asset="dpo_evaluation")
    record_evaluation(instance, lake, keys[1], 1.60, asset="sft_evaluation")  # a newer SFT model
    result, _ = materialise_release(instance, resources)
    assert result.success and lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[1]
    record_evaluation(instance, lake, keys[0], 1.55, asset="dpo_evaluation")  # its DPO follows
    result, _ = materialise_release(instance, resources)
    assert result.success and lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[0]
