# A tiny CPU run for tests and a first look: a ~60K-parameter GPT on the offline demo corpus
# (python prepare/demo.py first), a few seconds on a laptop CPU.
#   python train.py config/tiny.py
# Schedule: N=40 steps x S=8 sequences; U=8 unique target sequences x e=4 epochs = 32 target slots (γ=0.1);
# mid-training with ρ=0.5, α=1, so stage 2 = δN = γα/(1−ρ)·N = 8 steps, half target.
out_dir = 'out/tiny'
generic_dir = 'data/demo_generic'
target_dir = 'data/demo_target'
device = 'cpu'
max_iters = 40
batch_size = 4
gradient_accumulation_steps = 2
block_size = 32
target_tokens = 256
target_epochs = 4
replay_fraction = 0.5
stage2_allocation = 1.0
mode = 'midtrain'
lr_schedule = 'wsd'
learning_rate = 3e-3
eval_interval = 10
val_tokens = 2048
log_interval = 5
checkpoint_interval = 20
spike_eval_steps = 4
spike_eval_interval = 1
n_layer = 2
n_head = 2
n_embd = 32
