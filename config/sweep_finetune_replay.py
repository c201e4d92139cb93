# ρ sweep of the one-knob fine-tuning recipe (config/finetune_replay.py): ρ in {0, .25, .5, .75}, each run
# N = ⌈U·e / (S·(1 − ρ))⌉ steps (max_iters = 0), so every run sees the same target data and only adds replay.
# Seeds: a run from a loaded model with dropout 0 has no randomness but the data order, so a seed here sets
# data_seed alone (the target order of each epoch and the generic permutation; the target pool is the same windows
# when target_tokens takes the whole split); `seed` (model init, dropout) would change nothing.
#   python sweep.py config/sweep_finetune_replay.py --dry_run=True && python sweep.py config/sweep_finetune_replay.py
#   python plot.py out/sweep_finetune_replay --report
base = ['config/finetune_replay.py']
runs = [dict(replay_fraction=rho) for rho in (0.0, 0.25, 0.5, 0.75)]
grid = {'data_seed': [1, 2]}
sweep_dir = 'out/sweep_finetune_replay'
