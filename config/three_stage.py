# A three-stage pipeline, how open-weight models are made and then adapted, on the demo corpus (python
# prepare/demo.py first; about half a minute on a laptop CPU):
#   stage 1  pre-training: generic data only                          \ one WSD schedule,
#   stage 2  mid-training: target data with replay (ρ = 0.75)        / one optimizer
#   stage 3  fine-tuning: mostly target (ρ = 0.25), a fresh optimizer and a restarted cosine schedule
#   python train.py config/three_stage.py
#   python schedule.py config/three_stage.py      # the stage table
# Target: U = 64 unique sequences (4,096 tokens) x e = 16 epochs = 1,024 sequences, 256 in stage 2 (64 steps x 16
# x 0.25), the rest (768 of 64 x 16 slots: ρ = 0.25) in stage 3. Model: the tiny GPT of config/tiny.py, wider.
out_dir = 'out/three_stage'
generic_dir = 'data/demo_generic'
target_dir = 'data/demo_target'
device = 'cpu'
max_iters = 320
batch_size = 16
gradient_accumulation_steps = 1
block_size = 64
target_tokens = 4096
target_epochs = 16
lr_schedule = 'wsd'
learning_rate = 1e-3
stages = [
    dict(fraction=0.6, target=0),                           # steps 0..191
    dict(fraction=0.2, replay_fraction=0.75),               # steps 192..255
    dict(schedule='restart', lr_schedule='cosine', learning_rate=3e-4, reset_optimizer=True),  # the rest
]
eval_interval = 32
val_tokens = 8192
spike_eval_steps = 16                                       # dense evals after stage 3's reset and restart
spike_eval_interval = 4
log_interval = 16
checkpoint_interval = 0
n_layer = 2
n_head = 4
n_embd = 64
