"""Stage lists changed nothing that existed: for every run config in config/ and every run of every sweep file,
the per-step (stage, lr, optimizer reset, eval, is_target, ids) of today's planner digest to exactly the table
written by the planner before plans became stage lists (tests/plan_table.py, tests/data/plan_table.json), with
fixed split sizes (a big generic split, and a small one that makes every run reshuffle its generic data)."""
import json
import subprocess
import sys

import plan_table
from helpers import ROOT


def test_every_config_and_sweep_run_plans_exactly_as_before():
    with open(plan_table.TABLE) as f:
        before = json.load(f)
    now = plan_table.table()
    assert set(before) <= set(now)  # every config and sweep run of then
    added = {name.split('|')[0].split(':')[0] for name in set(now) - set(before)}  # configs written since
    assert added == {'config/three_stage.py', 'config/replay_ramp.py', 'config/basque_llama31_8b.py',
                     'config/sweep_basque_8b.py', 'config/finetune_replay.py', 'config/sweep_finetune_replay.py',
                     'config/chat_replay_llama31_8b.py', 'config/sweep_chat_replay_8b.py'}
    changed = [name for name in before if now[name] != before[name]]
    assert not changed, f"{len(changed)} plans changed, e.g. {changed[:5]}"


def test_show_step_json_keeps_its_keys(tmp_path):
    result = subprocess.run([sys.executable, 'schedule.py', 'config/flan_replay.py', '--show_step=1000',
                             '--format=json', f'--generic_dir={tmp_path}/none', f'--target_dir={tmp_path}/none'],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)) == ['step', 'stage', 'lr', 'reset_optimizer', 'n_target', 'n_generic',
                                               'target_pool_ids', 'target_windows', 'generic_windows',
                                               'generic_stream_positions', 'slots_target']
