# A replay ramp on the demo corpus (python prepare/demo.py first; about half a minute on a laptop CPU): pre-training,
# then a stage whose replay fraction moves linearly from ρ = 0.75 at its first step to ρ = 0.25 at its last (the
# target share from 0.25 to 0.75), under one WSD schedule. The per-step target counts are exact integers summing to
# the stage's 640 target sequences (U = 64 unique x e = 10 epochs); python schedule.py config/replay_ramp.py
# prints the table, --show_step=t any step. Data, model and LR as config/three_stage.py.
#   python train.py config/replay_ramp.py
base = ['config/three_stage.py']  # the shared setup
out_dir = 'out/replay_ramp'
target_epochs = 10
stages = [
    dict(fraction=0.75, target=0),                          # steps 0..239: pre-training
    dict(replay_fraction=(0.75, 0.25)),                     # steps 240..319: ρ from 0.75 down to 0.25
]
eval_interval = 40
spike_eval_steps = 0
