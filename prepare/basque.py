"""
Basque (HiTZ/latxa-corpus-v1.1), at the paper's revision: the target domain of the 8B runs. All seven subsets
(booktegi, colossal-oscar, culturax, egunkaria, euscrawl-v1.1, hplt-v1, wikipedia): train from their train files,
val from their valid files.

    python prepare/basque.py --max_tokens 64M       # -> data/basque
"""
from hub import run_hub_script

if __name__ == '__main__':
    run_hub_script(__doc__, __file__, 'basque', 'HiTZ/latxa-corpus-v1.1', revision='02dc515',
                   data_files={'train': '*/train.jsonl.gz', 'validation': '*/valid.jsonl.gz'}, val_split='validation')
