"""
FineMath (HuggingFaceTB/finemath, config finemath-3plus), at the revision the paper used: the math target domain.

    python prepare/finemath.py --max_tokens 64M     # -> data/finemath
"""
from hub import run_hub_script

if __name__ == '__main__':
    run_hub_script(__doc__, __file__, 'finemath', 'HuggingFaceTB/finemath', revision='8f233cf',
                   config='finemath-3plus')
