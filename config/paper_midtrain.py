# The paper's MID-TRAINING protocol (shared by config/*_midtrain.py): one WSD schedule over both stages at LR 3e-3
# with a 0.1 cooldown, no optimizer reset.
base = ['config/paper.py']  # the shared setup
mode = 'midtrain'
lr_schedule = 'wsd'
cooldown_fraction = 0.1
learning_rate = 3e-3
