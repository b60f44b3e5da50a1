"""The command line: a door to the Python API, with no logic of its own.

Every verb parses its arguments and makes one API call. A ``DeepstrataError`` (bad
file, key or value) becomes one line on stderr and exit status 2, never a traceback;
so does an ``OSError`` (``--out`` under a file, a read-only folder, a full disk), as
``deepstrata: error: PATH: reason``. ``DEEPSTRATA_DEBUG=1`` shows the traceback of an
``OSError`` instead, for when one is a bug rather than the user's path. A bad flag
value is refused while parsing, in three lines (``cli_args.Parser``), before anything runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

# Building the parser imports only these light modules: no torch, so that `deepstrata --help`
# (and any VERB --help) answers at once; each verb imports what it runs when it runs.
from deepstrata import __version__, cli_embed, cli_inspect, cli_recommend, cli_text
from deepstrata import cli_shard
from deepstrata import cli_export
from deepstrata import cli_serve
from deepstrata import cli_runs
from deepstrata.cli_args import (IMAGE_FORMATS, POSITIVE_COUNT, Parser, for_verb, in_flag_names, misapplied, number,
                                 os_error_line, task_only, verb_parser)
from deepstrata.config import CROPS, DEVICES, LR_SCALINGS, PLATEAU_MODES, PRECISIONS, SCHEDULES, TRANSFER_MODES
from deepstrata.errors import ConfigError, DeepstrataError, Interrupted
from deepstrata.model_names import IMAGE_MODELS, MODEL_NAMES


def _add_fit(sub: argparse._SubParsersAction, verb: str = "fit") -> None:
    """``fit``, or ``transfer``: the same fit (the same options, the same run directory) from another network."""
    if verb == "fit":
        p = sub.add_parser(
            "fit",
            help="train a model on raw data beside hand-engineered baselines",
            description="Train a model end-to-end on raw data, train the hand-engineered baselines on the same "
            "split, and write a run directory with metrics, checkpoints, comparison.json and report.html. "
            "Options left out come from --config, then from the defaults.",
        )
    else:
        p = sub.add_parser(
            "transfer",
            help="reuse a trained network's layers on new data (few labels)",
            description="Fit on new data starting from another network's layers: an image run, a pretrained "
            "network (efficientnet-lite0, offline) or a weights file (--arch); for texts a text run or the "
            "pretrained MiniLM encoder (minilm, offline). The result is an ordinary run, beside the same "
            "hand-engineered baselines as any fit.",
        )
        group = p.add_argument_group("transfer options")
        group.add_argument("--from", dest="transfer_from", required=True, metavar="SOURCE",
                           help="a run directory, 'efficientnet-lite0' (ImageNet weights; the [vision] extra), "
                                "a .safetensors / state-dict file with --arch, or for texts 'minilm' "
                                "(all-MiniLM-L6-v2; the [text] extra) or a text run")
        group.add_argument("--arch", choices=IMAGE_MODELS, help="the architecture of a weights file")
        group.add_argument("--up-to", metavar="LAYER",
                           help="reuse the source's layers up to and including LAYER (default: all but the head)")
        group.add_argument("--mode", choices=TRANSFER_MODES,
                           help="linear: reused layers frozen (BatchNorm statistics too; in eval mode, so dropout "
                                "is off), a new head trains; "
                                "finetune (default): everything trains, earlier layers at lower rates; gradual: "
                                "finetune, unfreezing the reused layers from the top down over the epochs")
        group.add_argument("--curve", metavar="BUDGETS",
                           help="the few-label learning curve, e.g. 1,5,10,50,all: transfer vs the same architecture "
                                "from scratch vs the hand-engineered baseline at each number of labels per class "
                                "(curve.json and a plot in the report of the run in --out)")
        group.add_argument("--curve-seeds", type=number(POSITIVE_COUNT), metavar="N",
                           help="seeds for budgets of up to 10 labels per class (default 3; mean and std)")
    # General options first, then one group per family (image here, text and recommendation from
    # their modules). Options are added in their historical order, whatever their group: the usage
    # line, and which misapplied flag is named first, stay as they were.
    image = p.add_argument_group("image options", "image data: 'digits', a named set, an image folder, an IDX "
                                 "directory, CIFAR-10 batches or a shard directory")
    p.add_argument("--data", metavar="SOURCE", help="'digits' (default), 'mnist', 'fashion-mnist', 'cifar10', "
                   "an image folder (one sub-folder per class), an IDX directory, CIFAR-10 python batches, "
                   "or a shard directory written by `deepstrata shard` (streamed)")
    p.add_argument("--task", choices=("image", "text", "recommend"),
                   help="what to learn (default: implied by --model and the data: images, text tables, interaction logs)")
    image.add_argument("--format", choices=IMAGE_FORMATS, help="override the detected kind of SOURCE")
    task_only(image.add_argument("--data-dir", metavar="DIR",
                                 help="cache for named data sets (default $DEEPSTRATA_DATA or ~/.cache/deepstrata)"),
              "image")
    task_only(image.add_argument("--image-size", type=number("data.image_size"), metavar="PX",
                                 help="folder images' input size: short side to PX, centre crop (default: chosen for "
                                      "the model and device, e.g. 64 for a CNN on a CPU; smaller images keep their "
                                      "most common size)"), "image")
    task_only(image.add_argument("--labels-per-class", type=number("data.labels_per_class"), metavar="N",
                                 help="train (and select) on N labelled images (or texts) per class; the test split "
                                      "stays whole (few-label learning, e.g. for transfer)"), "image", "text")
    task_only(image.add_argument("--crop", choices=CROPS,
                                 help="training crop: pad (pad and crop at a random offset; the default, auto) or "
                                      "resized (ImageNet's random resized crop, 35-100%% of the area: for photos "
                                      "and long training)"), "image")
    task_only(image.add_argument("--skip-bad", action="store_true", default=None,
                                 help="skip unreadable images in a folder (the count is reported)"), "image")
    task_only(p.add_argument("--val-fraction", type=number("data.val_fraction"), metavar="F",
                             help="share of the training data held out for validation (default 0.1); image runs "
                                  "also take 0: no validation split, train on all of it and keep the last epoch"),
              "image", "text")
    p.add_argument("--model", choices=MODEL_NAMES, help="model family (default cnn)")
    p.add_argument("--width", type=number("model.width"), help="base channel width of the model (default 32)")
    p.add_argument("--epochs", type=number("train.epochs"),
                   help="training epochs (default: about 900 steps, between 4 and 40 epochs)")
    p.add_argument("--batch-size", type=number("train.batch_size"),
                   help="examples per step (default 128; 256 from 10,000 training examples)")
    p.add_argument("--lr", type=number("train.lr"), help="peak learning rate of AdamW (default 3e-3)")
    p.add_argument("--weight-decay", type=number("train.weight_decay"), help="AdamW weight decay (default 5e-4)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default onecycle)")
    p.add_argument("--label-smoothing", type=number("train.label_smoothing"),
                   help="label smoothing, 0 <= S < 1 (default 0.1)")
    task_only(p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                             help="turn off augmentation"), "image", "text")
    p.add_argument("--patience", type=number("train.patience"),
                   help="stop after this many epochs without a better validation accuracy (0: never)")
    p.add_argument("--seed", type=number("train.seed"),
                   help="seed for the split, initialisation and batches, 0 to 2^32-1 (default 0)")
    p.add_argument("--device", choices=DEVICES, help="where to train (default auto: CUDA, then MPS, then CPU)")
    p.add_argument("--precision", choices=PRECISIONS, help="auto (default: bf16 where the hardware runs it natively, else fp32), 32, bf16 or fp16 autocast")
    task_only(p.add_argument("--channels-last", nargs="?", const="on", choices=("auto", "on", "off"), default=None,
                             help="channels-last (NHWC) memory format: on (the bare flag), off, or auto (default: on "
                                  "for convolutional image models on inputs of 16 pixels and more)"), "image", "text")
    p.add_argument("--threads", type=number("train.threads"), help="torch CPU threads (default: torch's choice)")
    p.add_argument("--devices", type=number("train.devices"), help="data-parallel processes on this machine (DDP: "
                   "gloo on CPU, NCCL on CUDA); --batch-size stays the global batch, split evenly across processes")
    p.add_argument("--batch-per-device", action="store_true", default=None,
                   help="--batch-size is each process's batch (the global batch is N times it); default: global")
    p.add_argument("--lr-scaling", choices=LR_SCALINGS,
                   help="with --batch-per-device, scale --lr with the N-fold global batch: linear (x N), sqrt, "
                        "or none (default)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--data-on-device", action="store_true", default=None,
                   help="keep the whole data set on the accelerator and augment there (small data sets)")
    p.add_argument("--checkpoint-every", type=number("train.checkpoint_every"), metavar="STEPS",
                   help="also checkpoint every STEPS steps (default 0: by time only)")
    p.add_argument("--plateau", choices=PLATEAU_MODES,
                   help="end a run whose smoothed validation metric stopped improving, after a short cool-down of "
                        "the learning rate: on, off, or auto (default: on when the epochs are sized from the data, for image runs)")
    p.add_argument("--checkpoint-seconds", type=number("train.checkpoint_seconds"), metavar="S",
                   help="checkpoint once S seconds of training have passed since the last one, and at the end "
                        "(default 60; 0: at every epoch's end); a stop signal always checkpoints")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard event files "
                   "to RUN/tensorboard/ (the [tracking] extra; view with: tensorboard --logdir runs/)")
    p.add_argument("--config", metavar="RUN.YAML", help="a YAML config (sections data, model, train); flags override it")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<data>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory in --out")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", default=None, help="skip the hand-engineered baselines")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    cli_text.add_fit_arguments(p)
    cli_recommend.add_fit_arguments(p)


def _add_run_verbs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a finished run on a data source",
                       description="Accuracy and macro-F1 of a run's kept model. On the run's own source its test split "
                       "is used; on another source its official test split, or all examples.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--data", metavar="SOURCE", help="data source (default: the run's own)")
    p.add_argument("--data-dir", metavar="DIR", help="cache for named data sets")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("predict", help="label images (or texts) with a finished run",
                       description="Print the predicted label and its probability for each image file, "
                       "or for each text of a text run.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("paths", metavar="PATH", nargs="*", default=[],
                   help="image files or folders of images; texts for a text run")
    cli_text.add_predict_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, label, probability}")

    p = sub.add_parser("compare", help="print the comparison table of a finished run",
                       description="Print the learned model beside the hand-engineered baselines (test split).")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--json", action="store_true", help="print comparison.json")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure training throughput and scaling on this machine",
                       description="Samples/s of the training loop: 1 CPU process, N CPU processes (gloo) with the "
                       "scaling efficiency, and on a GPU fp32/bf16 with and without compile and data on device, "
                       "with model FLOP utilisation.")
    p.add_argument("--data", default="mnist", metavar="SOURCE", help="image source (default mnist)")
    p.add_argument("--model", default="cnn", choices=IMAGE_MODELS, help="model family (default cnn)")
    p.add_argument("--width", type=number("model.width"), help="model width (default: the model's)")
    p.add_argument("--processes", type=number(POSITIVE_COUNT), default=2,
                   help="CPU processes for the gloo row (default 2)")
    p.add_argument("--batch-size", type=number(POSITIVE_COUNT), default=256, help="global batch (default 256)")
    p.add_argument("--steps", type=number(POSITIVE_COUNT), default=30, help="steps per timed epoch (default 30)")
    p.add_argument("--no-gpu", dest="gpu", action="store_false", default=None, help="skip GPU rows")
    p.add_argument("--json", action="store_true", help="print JSON rows")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deepstrata",
        description="Deep learning on raw data, measured against hand-engineered baselines.",
        epilog="Run 'deepstrata VERB --help' for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"deepstrata {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_fit(sub)
    _add_fit(sub, "transfer")
    _add_run_verbs(sub)
    _add_bench(sub)
    cli_embed.add_parsers(sub)
    cli_recommend.add_parsers(sub)
    cli_inspect.add_parsers(sub)
    cli_shard.add_parsers(sub)
    cli_export.add_parsers(sub)
    cli_serve.add_parsers(sub)
    cli_runs.add_parsers(sub)
    return parser


def _fit_task(args: argparse.Namespace) -> str:
    """image, text or recommend: what ``api.fit`` will make of these arguments (as it decides it)."""
    from deepstrata.api import fit_family

    return fit_family(args.data, args.model, args.task, args.config, args.out, args.resume)


def _fit(args: argparse.Namespace, argv_of_fit: list[str] | None = None,
         fit_parser: argparse.ArgumentParser | None = None, *, helper: bool = False) -> int:
    if args.resume and not args.out:
        raise DeepstrataError("--resume needs --out RUN (the run directory to continue)")
    if helper:
        from deepstrata.startup import before_fit

        before_fit(getattr(args, "baselines", None), getattr(args, "devices", None),  # before torch is imported
                   getattr(args, "config", None))
    from deepstrata.api import fit

    # Options every task's fit shares are passed by name; the rest (task-specific flags
    # added by task modules) travel as overrides, and None means "not given".
    named = ("verb", "data", "model", "task", "config", "out", "resume", "overwrite", "quiet")
    overrides = {key: value for key, value in vars(args).items() if key not in named and value is not None}
    misapplied_flag = misapplied(fit_parser or verb_parser(build_parser(), args), args, _fit_task(args))
    if misapplied_flag is not None:
        raise misapplied_flag
    from deepstrata.api import launch_processes

    curve, curve_seeds = overrides.pop("curve", None), overrides.pop("curve_seeds", None)
    if curve is not None:
        from deepstrata.api import learning_curve

        if args.resume:
            raise DeepstrataError("--curve runs its fits anew; --resume continues a single run (leave out --curve)")
        if overrides.pop("labels_per_class", None) is not None:
            raise DeepstrataError("--labels-per-class: the curve sets the labels per class itself (--curve)")
        if (overrides.get("devices") or 1) > 1:
            raise DeepstrataError("--devices: the curve's fits run one process each (leave out --devices)")
        seed = overrides.pop("seed", 0)
        source = overrides.pop("transfer_from")
        learning_curve(source, args.data, curve, out=args.out, seeds=curve_seeds or 3, seed=seed,
                       overwrite=args.overwrite, quiet=args.quiet, **overrides)
        return 0
    status = launch_processes(sys.argv[1:] if argv_of_fit is None else argv_of_fit, devices=args.devices,
                              resume=args.resume, out=args.out, batch_size=args.batch_size,
                              batch_per_device=args.batch_per_device, device=args.device)
    if status is not None:
        return status
    fit(data=args.data, model=args.model, task=args.task, config=args.config, out=args.out, resume=args.resume,
        overwrite=args.overwrite, quiet=args.quiet, **overrides)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    result = load(args.run).evaluate(args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
        print(f"{result['data']} ({result['split']}, {result['examples']} examples): {metrics}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    run = load(args.run)
    predictions = run.predict(run.family.predict_inputs(run, list(args.paths), args.file, args.text_column))
    print(run.family.render_predictions(predictions, args.json))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    run = load(args.run)
    print(json.dumps(run.comparison(), indent=2) if args.json else run.compare())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from deepstrata.bench import format_bench, run_bench

    rows = run_bench(args.data, args.model, processes=args.processes, batch_size=args.batch_size, steps=args.steps,
                     width=args.width, gpu=args.gpu)
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else format_bench(rows, args.processes))
    return 0


VERBS = {"bench": _bench, "fit": _fit, "evaluate": _evaluate, "predict": _predict, "compare": _compare}
VERBS.update(cli_embed.VERBS)
VERBS.update(cli_recommend.VERBS)
VERBS.update(cli_inspect.VERBS)
VERBS.update(cli_shard.VERBS)
VERBS.update(cli_export.VERBS)
VERBS.update(cli_serve.VERBS)
VERBS.update(cli_runs.VERBS)


def main(argv: list[str] | None = None, *, helper: bool = False) -> int:
    """Run one command; ``helper``: a fit may start the baselines' helper process (the program does, via ``run``).

    In a process that runs many commands (tests, a notebook) the helper would outlive the
    command and serve the next ones, so only the program's entry point asks for it.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    verb = verb_parser(parser, args)
    try:
        if args.verb in ("fit", "transfer"):
            return _fit(args, argv if argv is not None else sys.argv[1:], fit_parser=verb, helper=helper)
        return VERBS[args.verb](args)
    except Interrupted as stop:  # SIGTERM/SIGINT: a checkpoint was written; 143 or 130
        if os.environ.get("RANK", "0") == "0":
            print(f"deepstrata: {stop}", file=sys.stderr)
        return stop.exit_code
    except DeepstrataError as err:
        line = for_verb(err, verb)
        if isinstance(err, ConfigError) and err.origin is None and verb is not None:  # a flag's value, by its flag
            line = in_flag_names(line, verb, args, bool(getattr(args, "config", None) or getattr(args, "resume", 0)))
        print(f"deepstrata: error: {line}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("deepstrata: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `deepstrata compare RUN | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a path the user gave: --out under a file, a read-only folder, a full disk
        if os.environ.get("DEEPSTRATA_DEBUG"):
            raise
        print(f"deepstrata: error: {os_error_line(err)}", file=sys.stderr)
        return 2


def run() -> int:
    """The program's entry point (the ``deepstrata`` script, ``python -m deepstrata``): ``main``, then a quick exit.

    What is still alive when a command returns is left to the interpreter's shutdown, whose
    garbage-collection passes over torch's and scikit-learn's objects took 1.0 s of every
    command on two cores, 0.2 s once frozen (``gc.freeze``; ``benchmarks/fit_fixed_costs.py``).
    Atexit handlers, flushes and module teardown still run, and every file a command writes
    was closed and synced before it returned. Not part of ``main``, which tests call many
    times in one process.
    """
    code = main(helper=True)
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(run())
