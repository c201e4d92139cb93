# The paper's fine-tuning figure: final Flan loss against ρ with total steps fixed. Fine-tuning lasts 32 target
# steps x m, m in {1, 1.125, 1.25, 1.5, 2, 3, 4}, so ρ = 1 − 1/m, and pre-training is shortened to match; plus the
# reference runs, so `python efficiency.py out/sweep_finetune` gives the fine-tuning multiplier (paper: 1.87x).
#   python sweep.py config/sweep_finetune.py --gpus=0,1,2,3,4,5,6,7 && python plot.py out/sweep_finetune
# These runs share no prefix (each pre-training cosine has its own length): 12 full runs, about 12 x 1.0 H100-hours
# (an ESTIMATE from the FLOP count at an assumed 40% MFU; see config/paper.py).
include = ['config/sweep_reference.py']  # runs = the reference runs
base = ['config/flan_replay.py']
runs = [dict(protocol='finetune', replay_fraction=1 - 1 / m) for m in (1, 1.125, 1.25, 1.5, 2, 3, 4)] + runs
sweep_dir = 'out/sweep_finetune'
