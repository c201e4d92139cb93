# The paper's "150m" model SHAPE, Llama-style (RMSNorm, rotary theta 1e4, SwiGLU, untied head, no biases, init std
# 0.02). Model keys only: stack it AFTER a run config, which keeps its data, schedule and block_size:
#   python train.py config/flan_replay.py config/model_llama_150m_shape.py
# It is NOT 150M parameters here. The body (6 layers, hidden 512, SwiGLU 1792, 8 heads of 64) is the paper's:
# 22.8M parameters without embeddings. The paper's 154M adds a 128,256-token Llama-3 vocabulary (embedding and
# untied head, 2 x 65.7M); with GPT-2's 50,257-token vocabulary (our prepare/ scripts) the whole model is ~74M.
# The vocabulary comes from the data's meta.json, not from here. block_size is left to the run config (the paper
# trains on 4096-token sequences).
arch = 'llama'
n_layer = 6
n_head = 8
n_embd = 512
intermediate_size = 1792
rope_theta = 10000.0
norm_eps = 1e-5
init_std = 0.02
bias = False
dropout = 0.0
