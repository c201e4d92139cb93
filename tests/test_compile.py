"""torch.compile under ddp and FSDP2, with and without activation checkpointing, on CPU (gloo) under
`torchrun --nproc_per_node=2`: one launch of this file as a script covers every case. runtime.load_model builds each
model the way train.py does (checkpointing inside each block, compile of each block and of the head/loss, then the
DDP wrapper or FSDP2's sharding), with a counting backend instead of inductor: it runs the graph dynamo captured, and
counts how many graphs were compiled and how many times compiled code ran. Every case asserts:
- no graph break (dynamo's counters), fullgraph compiles, and the recompute is inside the block's graph;
- every block and the head/loss ran compiled code in every forward (n_layer + 1 compiled calls per micro-step);
- two train.train_step steps give the eager run's losses, to the bit, and the same weights after them.
And AdamW: fused on cuda under fsdp too; a fused step on FSDP2's DTensors equals the per-tensor loop's."""
import contextlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [(parallel, mode) for parallel in ('ddp', 'fsdp') for mode in ('none', 'full', 'selective')]


def test_every_block_compiles_under_ddp_and_fsdp(tmp_path):
    out = tmp_path / 'results.json'
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                             os.path.abspath(__file__), str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=420, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    results = json.loads(out.read_text())
    assert results.pop()['fused_equals_loop']  # fused AdamW on DTensors (fsdp's parameters) = the loop's step
    assert [(r['parallel'], r['mode']) for r in results] == CASES
    for r in results:
        case = f"{r['parallel']}, activation checkpointing {r['mode']}"
        assert r['graph_breaks'] == 0, case
        assert r['graphs'] == 2, case  # the blocks share one graph (they are alike); the head/loss has its own
        assert r['checkpointed_graphs'] == (0 if r['mode'] == 'none' else 1), case  # checkpointing compiled in
        assert r['compiled_calls'] == r['forwards'] * (r['n_layer'] + 1), case  # every block + the head/loss
        assert r['losses'] == r['eager_losses'], case
        assert r['weights_equal'], case


def fused_adamw_on_dtensors(runtime, system, defaults, model_config_from):
    """runtime.make_optimizer picks torch's fused AdamW on cuda, also for FSDP2's DTensors: on this CPU (where
    torch's fused kernel exists too) one fused step on the sharded parameters equals the per-tensor loop's."""
    import torch
    from checkpoint import Start
    config = {**defaults, 'arch': 'llama', 'n_layer': 1, 'n_head': 2, 'n_embd': 16, 'block_size': 8,
              'parallel': 'fsdp', 'device': 'cpu', 'compile': False}
    assert runtime.make_optimizer(runtime.build_model(model_config_from(config, 61), 'cpu', 0), config,
                                  'cuda').defaults['fused']  # the choice on a GPU
    after = []
    for fused in (True, False):
        model = runtime.load_model(model_config_from(config, 61), config, system, 'float32',
                                   Start('scratch', '', None, 0, 0, None))
        optimizer = runtime.make_optimizer(model, config, 'cpu')
        for group in optimizer.param_groups:
            group['fused'] = fused
        x = torch.arange(16).view(2, 8) % 61
        model(x, x)[1].mean().backward()
        optimizer.step()
        after.append([p.full_tensor().clone() for p in model.parameters()])
    return all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(*after))


def worker(out_path):
    """One rank: every case, compiled and eager, from the same seed and batches."""
    import torch
    import torch.distributed as dist

    sys.path[:0] = [ROOT]
    import runtime
    import train
    from checkpoint import Start
    from configurator import DEFAULTS
    from model import model_config_from

    system = runtime.init_system({**DEFAULTS, 'device': 'cpu'})
    calls = {'graphs': 0, 'runs': 0, 'checkpointed': 0}

    def counting_backend(graph_module, example_inputs):
        calls['graphs'] += 1
        calls['checkpointed'] += 'tag_activation_checkpoint' in graph_module.code  # the block's recompute, inside

        def run(*args):
            calls['runs'] += 1
            return graph_module.forward(*args)
        return run
    prepare_blocks = runtime.prepare_blocks
    runtime.prepare_blocks = lambda *args, **kwargs: prepare_blocks(*args, **kwargs, backend=counting_backend)

    g = torch.Generator().manual_seed(0)
    steps = [[(torch.randint(0, 61, (2, 17), generator=g), torch.tensor([True, False])) for _ in range(2)]
             for _ in range(2)]  # 2 steps x 2 micro-steps (one per rank under ddp and fsdp alike here)

    def run(parallel, mode, compiled):
        config = {**DEFAULTS, 'arch': 'llama', 'n_layer': 2, 'n_head': 2, 'n_kv_head': 1, 'n_embd': 16,
                  'block_size': 16, 'parallel': parallel, 'activation_checkpointing': mode, 'compile': compiled,
                  'device': 'cpu', 'learning_rate': 1e-2}
        raw = runtime.load_model(model_config_from(config, 61), config, system, 'float32',
                                 Start('scratch', '', None, 0, 0, None))
        model = runtime.wrap_ddp(raw, config, system)
        optimizer = runtime.make_optimizer(raw, config, 'cpu')
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        losses = []
        for batch in steps:
            window = train.LossWindow('cpu')
            mine = batch[system.rank::system.world]  # this rank's micro-steps of the global batch
            train.train_step(model, optimizer, scaler, contextlib.nullcontext(), mine, window, 1.0)
            losses.append(window.reduced(system.world)[0])
        state = {k: (v.full_tensor() if hasattr(v, 'full_tensor') else v).detach().clone()
                 for k, v in raw.state_dict().items()}
        return losses, state, raw.config.n_layer, 2 * len(mine)

    results = []
    for parallel, mode in CASES:
        import torch._dynamo
        torch._dynamo.reset()
        before = dict(calls)
        losses, state, n_layer, forwards = run(parallel, mode, True)
        counts = runtime.compile_counts()
        eager_losses, eager_state, _, _ = run(parallel, mode, False)
        results.append(dict(parallel=parallel, mode=mode, losses=losses, eager_losses=eager_losses,
                            graphs=calls['graphs'] - before['graphs'], graph_breaks=counts['graph_breaks'],
                            compiled_calls=calls['runs'] - before['runs'], forwards=forwards, n_layer=n_layer,
                            checkpointed_graphs=calls['checkpointed'] - before['checkpointed'],
                            weights_equal=all(torch.equal(state[k], eager_state[k]) for k in state)))
    results.append(dict(fused_equals_loop=fused_adamw_on_dtensors(runtime, system, DEFAULTS, model_config_from)))
    if system.rank == 0:
        with open(out_path, 'w') as f:
            json.dump(results, f)
    dist.destroy_process_group()


if __name__ == '__main__':
    worker(sys.argv[1])
