# Llama-3.2-1B's shape from scratch (random weights; for speed and memory measurements, e.g. bench.py with
# parallel='fsdp'): 16 layers, width 2048, 32 query heads sharing 8 key/value heads, SwiGLU 8192, rope_theta 500000,
# the head tied to the token embedding. The vocabulary comes from the data (Llama 3's 128,256 with data prepared in
# its tokenizer; GPT-2's 50,257 with the gpt2 demo corpus). Add it after a run config:
#   torchrun --standalone --nproc_per_node=1 bench.py config/demo.py config/model_llama32_1b_shape.py --parallel=fsdp
arch = 'llama'
n_layer = 16
n_embd = 2048
n_head = 32
n_kv_head = 8
intermediate_size = 8192
rope_theta = 500000.0
tie_embeddings = True
