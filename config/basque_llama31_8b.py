# The paper's 8B run: Llama-3.1-8B continued on Basque text with SlimPajama replay, the one-knob recipe of
# config/finetune_replay.py (one stage, every step a share 1 − ρ of Basque and ρ of SlimPajama), 128 sequences of
# 4096 tokens per step, cosine LR 1e-5, a fresh optimizer; measured on XCOPA-eu (paper: 0.630 at ρ = 0, 0.650 at
# ρ = .75). Every ρ sees the same 400 steps' worth of Basque once (400 x 128 x 4096 = 210M tokens) and adds replay:
# N = ⌈400 / (1 − ρ)⌉ steps, derived (max_iters = 0). This file is ρ = 0.5 (N = 800); config/sweep_basque_8b.py
# runs ρ in {0, .5, .75, .9}.
#   hf download meta-llama/Llama-3.1-8B --local-dir models/Llama-3.1-8B      # gated: accept its license first
#   python prepare/basque.py --tokenizer models/Llama-3.1-8B --max_tokens 215M --out data/basque_llama3
#   python prepare/slimpajama.py --tokenizer models/Llama-3.1-8B --max_tokens 1.9B --out data/slimpajama_llama3
#   torchrun --standalone --nproc_per_node=8 train.py config/basque_llama31_8b.py
# Data: the Basque budget must hold the 51,200 target sequences (210M tokens; the README's 64M budget is for the
# paper's small models); SlimPajama must hold the generic sequences of the largest ρ (0.9: 4000 x 128 − 51,200 =
# 460,800 sequences, 1.89B tokens), else it repeats (the plan warns).
# Memory and cost: docs/benchmarks.md "8B memory" (ESTIMATES, not measured: no GPU was available).
base = ['config/finetune_replay.py']       # mode='mixed', max_iters=0, cosine, dropout 0
init_from = 'models/Llama-3.1-8B'          # the shape comes from its config.json; the model keys below are unused
generic_dir = 'data/slimpajama_llama3'
target_dir = 'data/basque_llama3'
out_dir = 'out/basque_llama31_8b'
tasks = {'xcopa_eu': 'data/xcopa_eu.jsonl'}  # docs/tasks.md says how to make it from HiTZ/XCOPA-eu
# the schedule: 210M Basque tokens seen once, spread over every step with replay
replay_fraction = 0.5                      # ρ; N = ⌈51,200 / (128 x (1 − ρ))⌉ = 800 steps
batch_size = 4                             # sequences per micro-step per GPU ... (docs/benchmarks.md "8B memory",
gradient_accumulation_steps = 32           # an ESTIMATE: ~57 GiB a GPU) S = 4 x 32 = 128 global, 4 micro-steps a GPU
block_size = 4096
target_tokens = 209715200                  # 400 x 128 x 4096: U = 51,200 sequences
target_epochs = 1
learning_rate = 1e-5
# evaluation: 256 held-out sequences per domain (1M tokens) and XCOPA-eu every 100 steps and at the end
eval_interval = 100
val_tokens = 1048576
log_interval = 1
checkpoint_interval = 200                  # a sharded checkpoint is ~96 GB (fp32 weights + AdamW moments)
# the system: FSDP2 over 8 GPUs, bf16 compute with fp32 reductions; selective checkpointing (attention and every
# other matmul kept: ~10% more compute where full recomputation costs ~31%, and ~8.7 GiB a sequence where none needs
# ~22: at micro-batch 1 without it, 4x the weight gathers per step). ESTIMATES: docs/benchmarks.md "8B memory"
parallel = 'fsdp'
dtype = 'bfloat16'
activation_checkpointing = 'selective'
compile = True
