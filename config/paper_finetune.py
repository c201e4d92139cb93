# The paper's FINE-TUNING protocol (shared by config/*_replay.py): pre-training alone with cosine at LR 1e-3, then
# fine-tuning from those weights with a fresh optimizer and a new cosine schedule at LR 3e-4. Total steps stay
# fixed: fine-tuning lasts 32 target steps x m with ρ = 1 − 1/m, and pre-training is shortened to match.
base = ['config/paper.py']  # the shared setup
mode = 'finetune'                    # stage 2 restarts the LR schedule and resets the optimizer
lr_schedule = 'cosine'
learning_rate = 1e-3
stage2_learning_rate = 3e-4
