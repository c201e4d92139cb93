# Fine-tuning on StarCoder (Python code) with replay ρ = 0.5 after C4 pre-training: the paper's
# fine-tuning protocol at m = 2 (960 pre-training steps, then 64 fine-tuning steps, half C4).
#   python prepare/c4.py && python prepare/starcoder.py
#   torchrun --standalone --nproc_per_node=8 train.py config/starcoder_replay.py
# ρ = 0 (no replay) is --replay_fraction=0; the whole m sweep is config/sweep_finetune.py. Cost: see config/paper.py.
base = ['config/paper_finetune.py']  # the shared setup
target_dir = 'data/starcoder'
out_dir = 'out/starcoder_replay'
