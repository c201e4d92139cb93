"""
C4 (allenai/c4, config en): the generic web text the model is pre-trained on, and replays. Val comes from C4's own
validation split. The paper used the C4 component of Dolma v1.7 instead: prepare/README.md says how.

    python prepare/c4.py --max_tokens 4.3B          # -> data/c4, ~8.6 GB
"""
from hub import run_hub_script

if __name__ == '__main__':
    run_hub_script(__doc__, __file__, 'c4', 'allenai/c4', revision='1588ec454efa1a09f29cd18ddd04fe05fc8653a2',
                   config='en', val_split='validation', max_tokens='4.3B')
