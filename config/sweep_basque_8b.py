# The paper's 8B replay sweep (config/basque_llama31_8b.py): ρ in {0, .5, .75, .9}, each run N = ⌈400 / (1 − ρ)⌉
# steps (derived: max_iters = 0), so that every run sees the same 210M Basque tokens once and only adds
# SlimPajama replay; XCOPA-eu accuracy per ρ. Seeds: none; a second one would set data_seed alone (see
# config/sweep_finetune_replay.py).
#   python sweep.py config/sweep_basque_8b.py --gpus_per_run=8 --gpus=0,1,2,3,4,5,6,7     # one node, run after run
#   python sweep.py config/sweep_basque_8b.py --launcher=slurm --gpus_per_run=8 --partition=gpu --time=720
# The runs share no prefix (each cosine has its own length). Cost, an ESTIMATE (not measured) from model.py's FLOP
# count (4.83e10 per token: 6 x (6.98B non-embedding + 0.53B head) + 6·L·H·Q·T causal attention) at an assumed 40%
# MFU on H100s: 6,800 steps x 524,288 tokens = 3.6B tokens, 1.72e20 FLOPs, about 15 hours on 8 H100s in all, ~17
# with selective checkpointing's recompute (+10%; full checkpointing's +31% would make it ~20).
base = ['config/basque_llama31_8b.py']
runs = [dict(name=f'rho{rho}', replay_fraction=rho) for rho in (0.0, 0.5, 0.75, 0.9)]  # N derived: 400 .. 4000
sweep_dir = 'out/sweep_basque_8b'
