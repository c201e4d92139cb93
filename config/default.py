# Every config key, its default and what it means. This file is itself a valid config (it changes nothing);
# configurator.py reads it to know which keys exist and what type each one has. Paper symbols in brackets:
# N steps, S sequences per step, U unique target sequences, e epochs, γ target share, ρ, α, δ.
# A config file may start from others: `base = ['config/paper.py']` (read first, in order; paths from the
# repository root; its own assignments win; see configurator.read_config_file).

# ---- I/O and logging ---------------------------------------------------------------------------------------
out_dir = 'out'                   # run directory: log.jsonl, summary.json, ckpt.pt
overwrite = False                 # True: start again in an out_dir that holds a finished run (summary.json), which
                                  # train.py otherwise refuses; its summary.json goes, its log and ckpt.pt are rewritten
generic_dir = 'data/demo_generic' # generic source (pre-training data, e.g. C4): train.bin, val.bin, meta.json
target_dir = 'data/demo_target'   # target source (the scarce fine-tuning domain): same layout
log_interval = 10                 # steps between train log records (the only regular host-device syncs)
eval_interval = 200               # steps between full validation passes on both domains (0 = only at the end)
val_tokens = 1048576              # validation uses the first val_tokens tokens of each val.bin, in whole windows
spike_eval_interval = 2           # denser evals right after stage 2 starts, for the initial loss spike ...
spike_eval_steps = 0              # ... during this many steps (0 = off)
tasks = {}                        # multiple-choice and generation tasks scored at every eval and at the end, as
                                  # lm-evaluation-harness scores them: {name: task file}, e.g. {'xcopa_eu':
                                  # 'data/xcopa_eu.jsonl'}, or {name: dict of options} (tasks.TASK_OPTIONS, e.g.
                                  # dict(file=..., num_fewshot=5, fewshot_file=..., limit=100)) (JSON lines;
                                  # docs/tasks.md); logged as kind='task' records
checkpoint_interval = 200         # steps between checkpoints (ckpt.pt, atomically replaced); 0 = only at the end
checkpoint_steps = []             # extra steps whose checkpoint is kept as ckpt_<step>.pt (sweep.py forks from them)
log_batch_ids = False             # log, per step, the first token of every sequence fed (tests decode ids from it)
wandb_log = False
wandb_project = 'replay'
wandb_run_name = ''

# ---- initialisation -----------------------------------------------------------------------------------------
init_from = 'scratch'             # 'scratch' | 'resume' (continue this run exactly) | path to another run's
                                  # checkpoint (weights only: fresh optimizer, this run's plan from step 0) | a
                                  # Hugging Face model directory (weights only; its config.json gives the shape,
                                  # the model keys below are not used, block_size and dropout are this run's)
resume_from = ''                  # with init_from='resume': a checkpoint of ANOTHER run whose plan equals this
                                  # run's up to the checkpoint's step (a fork; sweep.py uses it). '' = out_dir/ckpt.pt
force_resume = False              # resume even when the schedule/data fingerprint changed
stop_after = 0                    # 0 = run to the end; k > 0 = stop after k completed steps: write ckpt.pt (and
                                  # ckpt_<k>.pt if k is in checkpoint_steps), no summary.json, exit 0; a later
                                  # init_from='resume' continues exactly (sweep.py's SLURM jobs stop at fork points)
seed = 1337                       # model init and dropout
data_seed = 1337                  # target pool, per-epoch target order, generic permutation

# ---- the data schedule (schedule.py) --------------------------------------------------------------------------
max_iters = 1000                  # N: optimizer steps; 0 with mode='mixed' = derive N = ⌈U·e / (S·(1 − ρ))⌉, so
                                  # every ρ sees the same target data and adds replay (config/finetune_replay.py)
batch_size = 12                   # sequences per micro-step per rank
gradient_accumulation_steps = 1   # micro-steps per step, over all ranks: S = batch_size * this (global)
block_size = 256                  # tokens per sequence
target_tokens = 0                 # unique target tokens; U = target_tokens // block_size (0 = plain pre-training)
target_epochs = 1                 # e: times each unique target sequence is seen. γ = U*e / (N*S)
replay_fraction = None            # ρ: generic (replay) share of stage 2; mode='mixed': of every step
stage2_allocation = None          # α: share of the target slots placed in stage 2 (the rest go to stage 1)
stage2_fraction = None            # δ: stage-2 length / N. Give two of (ρ, α, δ); δ(1-ρ) = γα fixes the third
stages = None                     # a list of stages instead of (ρ, α, δ): dicts with steps or fraction; target,
                                  # allocation or replay_fraction (a number, or a (first step, last step) pair
                                  # for a ramp) or none (= the rest); ramp; schedule 'restart'|'continue' with
                                  # lr_schedule, learning_rate, min_lr, warmup_fraction, cooldown_fraction;
                                  # reset_optimizer; spike_evals. docs/schedule.md documents each key.
                                  # Examples: config/three_stage.py, config/replay_ramp.py
generic_offset = 0                # generic windows already used before step 0 (train.py sets it from an init_from
                                  # checkpoint, so replayed generic data is fresh)

# ---- learning rate and optimizer ------------------------------------------------------------------------------
mode = 'midtrain'                 # 'midtrain': one LR schedule, one optimizer; 'finetune': stage 2 restarts the
                                  # schedule at stage2_learning_rate and resets the optimizer; 'mixed': ONE stage,
                                  # every step target (share 1 − ρ) and replay (ρ), one schedule at learning_rate
                                  # (α = δ = 1: no stage2_* keys; ρ = 1 − γ unless given; see max_iters)
reset_optimizer = None            # ablation: override the mode's default (finetune True, midtrain False)
stage2_schedule = None            # ablation: 'restart' | 'continue' (default: finetune restart, midtrain continue)
lr_schedule = 'cosine'            # 'cosine' | 'wsd' | 'constant'
learning_rate = 1e-3              # peak LR (stage 1, or the whole run in one-schedule mode)
stage2_learning_rate = 3e-4       # peak LR of a restarted stage-2 schedule
min_lr = 0.0                      # LR at the end of a decay (the paper decays to 0)
warmup_fraction = 0.01            # warmup = max(1, round(warmup_fraction * schedule length)) steps, linear
cooldown_fraction = 0.1           # WSD: linear decay to min_lr over this last fraction of the schedule
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
grad_clip = 1.0                   # 0 = off
loss_average = 'tokens'           # chat sources: a step's loss = summed over its loss tokens / their number in the
                                  # whole step ('tokens'), or the mean of each window's mean ('sequences')

# ---- model (model.py) ---------------------------------------------------------------------------------------
arch = 'gpt2'                     # 'gpt2' (learned positions, LayerNorm, GELU, tied head) | 'llama' (rotary,
                                  # RMSNorm, SwiGLU, untied head)
n_layer = 12
n_head = 12
n_embd = 768
intermediate_size = 0             # MLP hidden width; 0 = 4*n_embd (gpt2) or the Llama rule (llama)
n_kv_head = 0                     # key/value heads (grouped-query attention, llama); 0 = n_head
tie_embeddings = None             # output head = token embedding; None = the arch's rule (gpt2 tied, llama untied)
dropout = 0.0
bias = False                      # biases in linears and LayerNorm (gpt2 only)
rope_theta = 10000.0
norm_eps = 1e-5
init_std = 0.02

# ---- system ---------------------------------------------------------------------------------------------------
device = 'auto'                   # 'auto' = cuda if available else cpu
dtype = 'auto'                    # 'auto' = bfloat16 on GPUs that support it, else float16; float32 on cpu
compile = 'auto'                  # torch.compile; 'auto' = on for cuda, off on cpu
backend = 'auto'                  # torch.distributed backend; 'auto' = nccl on cuda, gloo on cpu
parallel = 'ddp'                  # several ranks: 'ddp' (full weights, gradients and AdamW state on every rank) |
                                  # 'fsdp' (FSDP2: each block and the root sharded over the ranks, bf16 parameters
                                  # with fp32 reductions on GPUs; sharded checkpoints ckpt.dcp with
                                  # torch.distributed.checkpoint). fsdp needs torchrun, also for one rank
activation_checkpointing = 'none' # recompute activations in the backward pass (any parallel): 'none' | 'full' (every
                                  # block's: least memory, ~1/3 more compute) | 'selective' (torchtitan's per-op
                                  # policy: attention and every other matmul kept). True / False = 'full' / 'none'
pad_vocab = 'auto'                # round the embedding and head up to a multiple of 128 rows (a model from scratch;
                                  # loaded ones keep theirs); 'auto' = on for cuda, off on cpu. The extra rows are
                                  # never a target and are cut from the logits
dist_timeout_s = 3600             # torch.distributed timeout: a collective waits this long for a slow rank (a sharded
                                  # 8B checkpoint is ~96 GB on shared disk; NCCL's own default is 600 s)
