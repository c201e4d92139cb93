# Reference runs for the data-efficiency fit (efficiency.py), as the paper: no replay, target spread uniformly over
# the whole run (δ = 1, α = 1, so ρ = 1 − γ), 32 epochs, cosine, at unique target budgets D = 1, 2, 4, 8, 16 x 4M
# tokens. The other sweep files include these runs so each sweep directory holds its own fit.
#   python sweep.py config/sweep_reference.py --gpus=0,1,2,3,4,5,6,7
base = ['config/flan_midtrain.py']
runs = [dict(protocol='reference', reference=1, target_tokens=4194304 * budget, target_epochs=32,
             replay_fraction=None, stage2_allocation=1.0, stage2_fraction=1.0, mode='midtrain',
             lr_schedule='cosine', learning_rate=1e-3) for budget in (1, 2, 4, 8, 16)]
grid = {'seed': [0]}
sweep_dir = 'out/sweep_reference'
