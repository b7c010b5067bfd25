"""Post-training on the model side: distillation, instruction tuning (full or LoRA), DPO.

Each stage starts from a Tenali checkpoint (pretrained, distilled, or imported from Hugging Face with
`tenali_model.hf.import_hf`) and writes standard Tenali checkpoints (checkpoint.py layout) into its
own out_dir, so evaluation, Hugging Face export and serving read them unchanged. meta.json records
the stage, the parent checkpoint and the data files.

    python -m tenali_model.posttrain.distill --config distill.json   # student vs teacher on token shards
    python -m tenali_model.posttrain.sft --config sft.json           # chat data, assistant-only loss
    python -m tenali_model.posttrain.dpo --config dpo.json           # chosen/rejected pairs

Every entry point runs under torchrun like `tenali_model.train` (single process or DDP), resumes
from <out_dir>/latest after a kill, writes metrics.jsonl and reports to Dagster Pipes from rank 0.
Configs are versioned JSON (`posttrain.config`); data formats are in `posttrain.data`.

Importing this package is cheap (no torch); import the submodules you need.
"""
