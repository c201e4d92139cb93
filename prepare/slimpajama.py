"""
SlimPajama-6B (DKYoon/SlimPajama-6B), at the paper's revision: an alternative generic source. Val comes from its
own validation split.

    python prepare/slimpajama.py --max_tokens 4.3B  # -> data/slimpajama
"""
from hub import run_hub_script

if __name__ == '__main__':
    run_hub_script(__doc__, __file__, 'slimpajama', 'DKYoon/SlimPajama-6B', revision='b5f90f4',
                   val_split='validation', max_tokens='4.3B')
