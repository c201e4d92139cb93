"""
Flan, the instruction-following target domain: the FLAN part of allenai/dolmino-mix-1124 (data/flan). It is the
Tulu-Flan component of Dolma v1.7 that the paper used, decontaminated for OLMo 2, open (no gate) and already one
formatted "text" per example, so nothing here has to choose a prompt template.

    python prepare/flan.py --max_tokens 64M         # -> data/flan
"""
from hub import run_hub_script

if __name__ == '__main__':
    run_hub_script(__doc__, __file__, 'flan', 'allenai/dolmino-mix-1124',
                   revision='a319f19eef1e257417b11ea8c30da266ae175557', data_files={'train': 'data/flan/*.json.gz'})
