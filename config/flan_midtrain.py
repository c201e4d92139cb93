# Mid-training on Flan (instructions; the domain of the paper's 1.87x / 2.06x efficiency numbers) with replay ρ = 0.5, α = 1: one WSD schedule
# (cooldown 0.1) over 960 C4 steps and a 64-step stage 2 that is half C4.
#   torchrun --standalone --nproc_per_node=8 train.py config/flan_midtrain.py
# The ρ x α grid is config/sweep_midtrain.py. Cost: see config/paper.py.
base = ['config/paper_midtrain.py']  # the shared setup
target_dir = 'data/flan'
out_dir = 'out/flan_midtrain'
