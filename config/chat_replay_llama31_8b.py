# The paper's chat result in our terms: Llama-3.1-8B fine-tuned on agentic chat data (the paper: WebLINX) with
# OpenHermes-2.5 chat replay at ρ = 0.5 (paper: 32.86 -> 37.26 WebLINX score; UltraChat at ρ = .35 gave 37.01).
# The paper's WebLINX preprocessing is not public: bring your own chat target as JSON lines of `messages` (or
# ShareGPT `conversations`); docs/chat.md says how it is rendered, masked and packed. Both sources are chat, packed
# for this block_size, in the model's tokenizer and chat template (an Instruct model's directory, or a base model
# given --chat_template=FILE):
#   hf download meta-llama/Llama-3.1-8B-Instruct --local-dir models/Llama-3.1-8B-Instruct   # gated: accept its license
#   python prepare/local.py --format=chat --input my_chat.jsonl --tokenizer models/Llama-3.1-8B-Instruct \
#       --block_size 4096 --out data/my_chat_llama3
#   python prepare/hub_chat.py --tokenizer models/Llama-3.1-8B-Instruct --block_size 4096 --max_tokens 1B \
#       --out data/openhermes_llama3
#   torchrun --standalone --nproc_per_node=8 train.py config/chat_replay_llama31_8b.py
# One stage of target + replay (mode='mixed', config/finetune_replay.py), N derived from ρ so that every ρ sees the
# same target windows once; the loss is over assistant tokens (prepare's --loss_on), averaged over the step's loss
# tokens (loss_average='tokens'). Memory and cost: as config/basque_llama31_8b.py (ESTIMATES, docs/benchmarks.md).
base = ['config/basque_llama31_8b.py']      # the 8B system: FSDP2, bf16, selective checkpointing, batch 128 x 4096
init_from = 'models/Llama-3.1-8B-Instruct'
generic_dir = 'data/openhermes_llama3'      # chat replay
target_dir = 'data/my_chat_llama3'          # your chat target
out_dir = 'out/chat_replay_llama31_8b'
tasks = {}                                  # add your generation task (docs/tasks.md), e.g. {'mine': dict(file=...)}
replay_fraction = 0.5                       # ρ, the paper's best for OpenHermes
target_tokens = 52428800                    # U = 12,800 windows of 4096 (100 steps' worth): set it to your data's size
target_epochs = 2
learning_rate = 1e-5
