# The paper's learning-rate cooldown sweep: WSD with the decay over the last {0, .05, .1, .2, .5, .99} of the run,
# against cosine, for mid-training on Flan without and with replay (ρ = 0, 0.5; α = 1). The paper found 0.05–0.1
# best and uses 0.1 everywhere.
#   python sweep.py config/sweep_cooldown.py --gpus=0,1,2,3,4,5,6,7 && python plot.py out/sweep_cooldown
base = ['config/flan_midtrain.py']
runs = ([dict(protocol='wsd', cooldown_fraction=c) for c in (0.0, 0.05, 0.1, 0.2, 0.5, 0.99)]
        + [dict(protocol='cosine', lr_schedule='cosine')])
grid = {'replay_fraction': [0.0, 0.5]}
sweep_dir = 'out/sweep_cooldown'
