# Fine-tune a model on your target text with replay: ONE knob, ρ (replay_fraction). mode='mixed' is one stage in
# which every step mixes the target (share 1 − ρ) with generic replay data (share ρ), under one cosine schedule
# and a fresh optimizer (init_from loads weights only). max_iters = 0 derives N = ⌈U·e / (S·(1 − ρ))⌉: every ρ
# sees the same target data (U·e sequences) and only adds replay, the paper's 8B protocol
# (config/basque_llama31_8b.py).
#   hf download meta-llama/Llama-3.2-1B --local-dir models/my_model     # any Llama / GPT-2 directory (README)
#   python prepare/local.py --input my_text.jsonl --text_field text --tokenizer models/my_model --out data/my_target
#   python prepare/local.py --input my_replay/ --tokenizer models/my_model --out data/my_generic  # pre-training-like
#   python schedule.py config/finetune_replay.py --replay_fraction=0.75   # the plan: N, the stage, target share and ρ
#   python train.py config/finetune_replay.py --replay_fraction=0.75
#   python sweep.py config/sweep_finetune_replay.py                       # ρ in {0, .25, .5, .75} x 2 data seeds
# target_tokens must fit the target train split (schedule.py says how many windows it holds if not).
init_from = 'models/my_model'     # YOUR model directory (config.json, *.safetensors, tokenizer.json): train.py and
                                  # schedule.py stop with one line if it is not there
generic_dir = 'data/my_generic'   # replay data, prepared in the model's tokenizer (--tokenizer models/my_model)
target_dir = 'data/my_target'     # the target text, same tokenizer
out_dir = 'out/finetune_replay'
# the schedule: U = 20,971,520 / 2048 = 10,240 target sequences seen once; S = 64 sequences of 2048 tokens per step
mode = 'mixed'                    # one stage of target + replay (α = δ = 1: no stage2_* keys)
max_iters = 0                     # 0 = derive N = ⌈U·e / (S·(1 − ρ))⌉: 320 steps at ρ = 0.5, 640 at 0.75
replay_fraction = 0.5             # ρ: the replay (generic) share of every step; 0 = plain fine-tuning
target_tokens = 20971520          # unique target tokens used (U = target_tokens // block_size)
target_epochs = 1                 # e
block_size = 2048
batch_size = 8                    # sequences per micro-step per GPU ...
gradient_accumulation_steps = 8   # ... S = 8 x 8 = 64 sequences per step, global
lr_schedule = 'cosine'
learning_rate = 1e-5              # the paper's 8B fine-tuning LR
min_lr = 0.0
warmup_fraction = 0.01
dropout = 0.0                     # with dropout 0 a loaded model's run varies only with data_seed (the data order)
eval_interval = 50
log_interval = 10
checkpoint_interval = 100
