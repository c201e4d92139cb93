"""
StarCoder data, Python files (bigcode/starcoderdata, data_dir python): the code target domain. The dataset is
gated: accept its terms on https://huggingface.co/datasets/bigcode/starcoderdata while logged in, then run
`huggingface-cli login` (or export HF_TOKEN=hf_...). Open fallback, no gate, also deduplicated Python from GitHub:

    python prepare/starcoder.py --max_tokens 64M    # -> data/starcoder
    python prepare/starcoder.py --dataset codeparrot/codeparrot-clean --text_field content --max_tokens 64M
"""
from hub import run_hub_script

if __name__ == '__main__':
    run_hub_script(__doc__, __file__, 'starcoder', 'bigcode/starcoderdata', revision='9fc30b5', data_dir='python',
                   text_field='content',
                   fallback='python prepare/starcoder.py --dataset codeparrot/codeparrot-clean --text_field content')
