# The paper's controlled setup (Kotha & Liang, arXiv 2603.04964, and its public experiment code), in GPT-2 tokens.
# Shared by the *_replay.py (fine-tuning) and *_midtrain.py configs; not meant to be run on its own.
#   N = 1024 steps x S = 1024 sequences x 4096 tokens = 4.29B tokens; one step = 4.19M tokens.
#   Target: one step's worth of unique tokens (4,194,304 = the paper's "4M"), 32 epochs (the paper's reference
#   runs), so γ = 32/1024 = 1/32 of all sequence slots.
# DEVIATIONS (on purpose): GPT-2's tokenizer (vocab 50,257) instead of Llama-3's (128,256); the paper's
# 6-layer/512-wide/8-head shape in the GPT-2 architecture by default — add config/model_llama_150m_shape.py after
# this config for the paper's Llama architecture; per-step deterministic mixing instead of random placement in
# blocks of 2048 sequences (schedule.py).
# COST (an ESTIMATE from model.py's FLOP count, 6N + 6·L·H·Q·T with causal attention; not measured: no GPU was
# available when this was written): 343M FLOPs/token x 4.29B tokens = 1.47e18 FLOPs per run, about 1.0 h on one H100
# at an assumed 40% MFU, about 8 min on 8. Measure yours with bench.py and see docs/benchmarks.md.
generic_dir = 'data/c4'
max_iters = 1024
block_size = 4096
batch_size = 16
gradient_accumulation_steps = 64     # S = 16 x 64 = 1024 sequences per step, on any number of GPUs dividing 64
target_tokens = 4194304
target_epochs = 32
stage2_allocation = 1.0              # α = 1: all target data in stage 2 (the fine-tuning setting)
replay_fraction = 0.5                # ρ = 0.5 (m = 2 in the fine-tuning protocol), so δ = γα/(1−ρ) = 1/16
n_layer = 6
n_head = 8
n_embd = 512
dropout = 0.0
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
grad_clip = 1.0
warmup_fraction = 0.01
min_lr = 0.0
val_tokens = 41943040                # 10,240 held-out sequences of 4096 tokens per domain, as the paper
eval_interval = 128
spike_eval_steps = 16                # the initial loss spike: an eval every 2 steps for 16 steps after stage 2
spike_eval_interval = 2
log_interval = 1
checkpoint_interval = 64
