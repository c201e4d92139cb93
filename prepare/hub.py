"""
Hugging Face Hub sources for the prepare/ scripts: datasets streamed through `datasets` (nothing downloaded whole),
Hub failures a user can act on (offline, gated, not found) as one-line errors, and hub_main, the whole of a Hub
script (c4.py, flan.py, ...): its pinned dataset, config, revision and text field, overridable from the command
line, then common.prepare_source. prepare/local.py reads local files through the same dataset_texts.
"""
import os
import sys

from common import UserError, base_parser, not_text, prepare_source, run_main


def import_datasets():
    """The `datasets` module, with two costs prepare has no use for turned off: loading a builder ("json", ...)
    pings the Hub to count downloads (a network call, up to 3 s offline, for reading local files), and streaming
    datasets import torch (~8 s here) only to share a counter with DataLoader workers."""
    import datasets
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    if 'torch' not in sys.modules:  # where torch is loaded anyway (a test session), leave datasets as it is
        datasets.config.TORCH_AVAILABLE = False
    return datasets


def _causes(e):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def hub_error(e, path, fallback):
    """The UserError for a Hub failure a user can act on (offline, gated, not found), else None."""
    chain = list(_causes(e))
    names = {type(x).__name__ for x in chain}
    text = ' '.join(str(x) for x in chain)
    fallback = f' Open fallback: {fallback}' if fallback else ''
    if 'GatedRepoError' in names or 'gated' in text.lower():
        return UserError(f'{path} is gated: accept its terms at https://huggingface.co/datasets/{path} (logged in), '
                         f'then authenticate here with `huggingface-cli login` or HF_TOKEN=hf_... in the '
                         f'environment.{fallback}')
    offline = {'ConnectError', 'ConnectTimeout', 'TimeoutException', 'OfflineModeIsEnabled', 'gaierror',
               'LocalEntryNotFoundError', 'NameResolutionError', 'MaxRetryError'}
    if names & offline or any(isinstance(x, (ConnectionError, TimeoutError)) for x in chain):
        return UserError(f'cannot reach the Hugging Face Hub for {path}: this machine looks offline '
                         f'({type(e).__name__}: {str(e)[:120]}). Hub sources need the network; offline, prepare '
                         f'files you have with prepare/local.py, or the built-in corpus with prepare/demo.py')
    if names & {'DatasetNotFoundError', 'RepositoryNotFoundError', 'RevisionNotFoundError', 'DataFilesNotFoundError',
                 'EmptyDatasetError'}:
        return UserError(f'{path}: {str(e)[:200]} (check --dataset/--config/--revision).{fallback}')
    return None


def dataset_texts(load, text_field, where, explain):
    """The texts of a `datasets` stream that load() opens (called on first use, so nothing is read before it is
    needed). A batch without text_field is a UserError naming `where`; any other failure goes through explain(e),
    which returns the UserError to raise instead, or None to let the original error through."""
    index = 0
    try:
        for batch in load().iter(batch_size=1000):
            if text_field not in batch:
                raise UserError(f"{where} has no field '{text_field}' (fields: {', '.join(batch)}); pass "
                                f'--text_field NAME')
            for text in batch[text_field]:
                if text is not None and not isinstance(text, str):
                    raise UserError(f"{where}: record {index:,} (from 0) has {not_text(text)} in '{text_field}': "
                                    f'is --text_field the text column?')
                index += 1
                yield text
    except UserError:
        raise
    except Exception as e:
        err = explain(e)
        if err is None:
            raise
        raise err from None


def hub_documents(path, split, text_field, fallback=None, **load_kwargs):
    """Documents of a Hub dataset split, streamed."""
    return dataset_texts(lambda: import_datasets().load_dataset(path, split=split, streaming=True, **load_kwargs),
                         text_field, path, lambda e: hub_error(e, path, fallback))


def hub_main(name, dataset, revision, config=None, text_field='text', split='train', val_split=None,
             data_dir=None, data_files=None, max_tokens='64M', fallback=None, doc=None, script=None, argv=None):
    """The whole of a Hub prepare script: its dataset, config, revision and text field, overridable from the
    command line. --dataset replaces the whole source: its config, revision (default main) and data_dir come from
    the command line then, not from the script, and no validation split is assumed."""
    p = base_parser(doc, max_tokens=max_tokens, out=os.path.join('data', name))
    p.add_argument('--dataset', default=dataset, help='Hub dataset id (default: %(default)s)')
    p.add_argument('--config', default=None, help=f'dataset config (default: {config})')
    p.add_argument('--revision', default=None, help=f'commit, tag or branch (default: {revision})')
    p.add_argument('--data_dir', default=None, help=f'directory inside the dataset (default: {data_dir})')
    p.add_argument('--text_field', default=text_field, help='column holding the text (default: %(default)s)')
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if not args.dataset.strip():
        raise UserError(f'--dataset is empty: give a Hub dataset id (default: {dataset})')
    if args.dataset != dataset:  # another dataset: the script's pins describe the default one only
        config, revision, data_dir, data_files, val_split = None, 'main', None, None, None
    config = args.config if args.config is not None else config
    revision = args.revision if args.revision is not None else revision
    data_dir = (args.data_dir or None) if args.data_dir is not None else data_dir
    load = {k: v for k, v in dict(name=config, revision=revision, data_dir=data_dir, data_files=data_files).items()
            if v is not None}
    source = dict(hub=args.dataset, config=config, revision=revision, data_dir=data_dir, data_files=data_files,
                  split=split, val_split=val_split, text_field=args.text_field)
    docs = hub_documents(args.dataset, split, args.text_field, fallback, **load)
    val_docs = hub_documents(args.dataset, val_split, args.text_field, fallback, **load) if val_split else None
    return prepare_source(docs, args.out, source, script or sys.argv[0], argv, tokenizer=args.tokenizer,
                          max_tokens=args.max_tokens, val_tokens=args.val_tokens, workers=args.workers,
                          force=args.force, val_docs=val_docs)


def run_hub_script(module_doc, script, name, dataset, revision, **spec):
    """Entry point of a Hub script: hub_main with one-line errors."""
    run_main(lambda argv: hub_main(name, dataset, revision, doc=module_doc, script=script, argv=argv, **spec))
