# GPT-2 small's shape (12 layers, 12 heads, hidden 768, GELU MLP of 3072, learned positions, LayerNorm, head tied to
# the token embedding). Model keys only: stack it after a run config, e.g.
#   python bench.py config/tiny.py config/model_gpt2_124m.py --block_size=1024 --batch_size=12
# ~124M parameters with GPT-2's 50,257-token vocabulary (85M without embeddings); the vocabulary comes from the
# data's meta.json. No biases (nanoGPT's default, slightly faster; GPT-2 itself had them: --bias=True).
# block_size is left to the run config (GPT-2 used 1024).
arch = 'gpt2'
n_layer = 12
n_head = 12
n_embd = 768
intermediate_size = 0
bias = False
dropout = 0.0
