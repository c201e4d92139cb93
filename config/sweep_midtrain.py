# The paper's mid-training grid on Flan: ρ in {0, .25, .5, .75, .875} x α in {1, .5, .25, .125}, 32 epochs, one WSD
# schedule (cooldown 0.1); plus the reference runs, so `python efficiency.py out/sweep_midtrain` gives the
# mid-training multiplier (paper: 2.06x).
#   python sweep.py config/sweep_midtrain.py --gpus=0,1,2,3,4,5,6,7 && python plot.py out/sweep_midtrain
# Prefix sharing: at α = 1 the five ρ runs share all steps before the earliest stage 2 (about 1515 steps instead of
# 5120); with α < 1 target data appears from step 0 at a rate that depends on ρ, so those rows share less.
# `python sweep.py config/sweep_midtrain.py --dry_run=True` prints the tree and the steps it saves.
include = ['config/sweep_reference.py']  # runs = the reference runs
base = ['config/flan_midtrain.py']
runs = [dict(protocol='midtrain', replay_fraction=rho, stage2_allocation=alpha)
        for alpha in (1.0, 0.5, 0.25, 0.125) for rho in (0.0, 0.25, 0.5, 0.75, 0.875)] + runs
sweep_dir = 'out/sweep_midtrain'
