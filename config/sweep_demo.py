# `make demo`: a replay sweep on the offline demo corpus that a 2-core laptop runs in minutes (config/demo.py).
# Mid-training protocol, α = 1, ρ in {0, .25, .5, .75}, 2 seeds; ρ = 0 vs ρ = 0.5 is the comparison fixed in
# advance. Every run shares the generic-only prefix of its seed, so sweep.py computes it once per seed.
# Efficiency: reference runs without replay at unique target budgets D = 1, 2, 4, 8, 16 x 8,192 tokens.
# DEVIATION from the paper's reference runs (32 epochs, target spread over the whole run): here they keep the
# demo's protocol and its number of target sequences (1,024 = 64 steps of stage 2) and see D x the data 16/D times.
# Two reasons: they then share the prefix too (64 steps each instead of 1,200), and in this protocol more data at a
# FIXED number of epochs makes the target loss worse, not better (a longer target-only stage 2 overfits more:
# ρ = 0 with 2x the data ended at 2.44 against 2.14), which no power law can fit. The multiplier thus says how much
# more unique target data the no-replay recipe would need, for the same number of target sequences, to match replay.
base = ['config/demo.py']
runs = ([dict(protocol='replay', replay_fraction=rho) for rho in (0.0, 0.25, 0.5, 0.75)]
        + [dict(protocol='reference', reference=1, replay_fraction=0.0, target_tokens=8192 * budget,
                target_epochs=16 // budget) for budget in (1, 2, 4, 8, 16)])
grid = {'seed': [1, 2]}
sweep_dir = 'out/demo'
