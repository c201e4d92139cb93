# A ρ sweep of config/chat_replay_llama31_8b.py in the paper's WebLINX shape (OpenHermes-2.5 replay; the paper's
# best ρ was 0.5): every run sees the same chat target windows and only adds replay (N derived from ρ).
#   python sweep.py config/sweep_chat_replay_8b.py --gpus_per_run=8 --gpus=0,1,2,3,4,5,6,7
#   python plot.py out/sweep_chat_replay_8b --report
base = ['config/chat_replay_llama31_8b.py']
runs = [dict(name=f'rho{rho}', replay_fraction=rho) for rho in (0.0, 0.25, 0.5, 0.75)]
sweep_dir = 'out/sweep_chat_replay_8b'
