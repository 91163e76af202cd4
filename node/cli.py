"""The ``radnode`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from node import __version__
from node.config import Config, ConfigError, load_config, reference
from node.errors import StartupError
from node.log import configure_logging
from node.store import JobState, OutboxState

DEFAULT_CONFIG = "config.toml"

log = logging.getLogger("radnode")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config",
        help=f"configuration file (default: ./{DEFAULT_CONFIG} if present, else built-in defaults)",
    )


def _load(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_config(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radnode",
        description="A DICOM node beside the PACS: receives studies, runs ONNX models on each "
                    "series, and sends back DICOM SEG and TID 1500 SR.",
    )
    parser.add_argument("--version", action="version", version=f"radnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the node: DICOM listener, completion, routing",
                           description="Run the node until SIGINT/SIGTERM.")
    _add_config(serve)

    route = sub.add_parser(
        "route", help="show which routes match the series in a folder",
        description="Evaluate the configured routes on every series found in DIR and print "
                    "which rule matched and why.",
    )
    route.add_argument("--explain", metavar="DIR", required=True, type=Path,
                       help="folder of DICOM files (searched recursively)")
    route.add_argument("--calling-ae", default="",
                       help="calling AE title to assume for calling_ae_title conditions")
    _add_config(route)

    run = sub.add_parser(
        "run", help="run one model on a DICOM folder or an image file, offline",
        description="Take a DICOM series folder (or a NIfTI .nii/.nii.gz, NRRD .nrrd/.nhdr, "
                    "MetaImage .mha/.mhd or FreeSurfer .mgz/.mgh file) through the same "
                    "pipeline as the service and write the results to --out.",
    )
    run.add_argument("input", type=Path,
                     help="DICOM folder, DICOM file, or NIfTI/NRRD/MetaImage/MGZ file")
    run.add_argument("--model", required=True, help="model name (a folder under models/)")
    run.add_argument("--out", required=True, type=Path, help="output folder")
    run.add_argument("--modality", default="",
                     help="modality of an image-file input (default: the model's, if it takes "
                          "one)")
    run.add_argument("--force", action="store_true",
                     help="run even if the model's manifest does not accept the series")
    _add_config(run)

    evaluate = sub.add_parser(
        "evaluate", help="agreement of a segmentation with a reference: Dice, IoU, HD95, ...",
        description="Compare two label images (DICOM SEG, NIfTI, NRRD, MetaImage or MGZ) label "
                    "by label: Dice, IoU, precision, recall, specificity, volumes and HD95. The "
                    "prediction is resampled onto the reference grid (nearest neighbour) when "
                    "they differ. Definitions: docs/evaluate.md.",
    )
    evaluate.add_argument("prediction", type=Path, help="the segmentation to evaluate")
    evaluate.add_argument("reference", type=Path, help="the reference (ground truth)")
    mapping = evaluate.add_mutually_exclusive_group()
    mapping.add_argument(
        "--map", action="append", metavar="SPEC",
        help='prediction label = reference values, with an optional name: "1=2,41" or '
             '"1=2,41:white matter"; repeat it or separate entries with ";" (default: equal '
             "values, every non-zero value present in either)")
    mapping.add_argument(
        "--map-file", type=Path, metavar="FILE",
        help='the mapping as JSON: {"1": [2, 41], "2": {"values": [4, 43], "name": "..."}}')
    evaluate.add_argument("--labels", metavar="LIST",
                          help="only these prediction labels, e.g. 1,3")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    models = sub.add_parser("models", help="list or check the model packages")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    models_check = models_sub.add_parser(
        "check", help="validate every manifest against its ONNX graph")
    _add_config(models_check)
    models_list = models_sub.add_parser("list", help="list installed models")
    _add_config(models_list)
    models_reference = models_sub.add_parser(
        "reference", help="print the models README with its key tables generated from the "
                          "manifest schema")
    models_reference.add_argument("--write", action="store_true",
                                  help="rewrite README.md in the models folder instead")
    _add_config(models_reference)

    status = sub.add_parser(
        "status", help="queues, recent jobs and failures of the node",
        description="Read the job store (also while the node runs) and print counts, the most "
                    "recent jobs and every failure: failed jobs and dead letters.")
    status.add_argument("--recent", type=int, default=10, help="how many recent jobs to list")
    _add_config(status)

    jobs = sub.add_parser("jobs", help="list, show, retry or cancel jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jobs_list = jobs_sub.add_parser("list", help="list jobs, newest first")
    jobs_list.add_argument("--state", choices=[s.value for s in JobState])
    jobs_list.add_argument("--limit", type=int, default=50)
    for action, text in (("show", "print one job as JSON (timings, results, error)"),
                         ("retry", "queue a failed or cancelled job again"),
                         ("cancel", "cancel a queued job")):
        job_cmd = jobs_sub.add_parser(action, help=text)
        job_cmd.add_argument("id", type=int)
        _add_config(job_cmd)
    _add_config(jobs_list)

    outbox = sub.add_parser("outbox", help="list results waiting to be sent, or retry dead ones")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    outbox_list = outbox_sub.add_parser("list", help="list outbox items, newest first")
    outbox_list.add_argument("--state", choices=[s.value for s in OutboxState])
    outbox_list.add_argument("--limit", type=int, default=50)
    _add_config(outbox_list)
    outbox_retry = outbox_sub.add_parser(
        "retry", help="send dead letters again (the running node picks them up)")
    target = outbox_retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", type=int, nargs="?", help="one dead letter")
    target.add_argument("--all", action="store_true", help="every dead letter")
    _add_config(outbox_retry)

    send = sub.add_parser(
        "send", help="send DICOM files to a DICOM node (C-STORE), with a progress bar",
        description="A convenience C-STORE client: sends every DICOM file under DIR.")
    send.add_argument("dir", type=Path, help="folder (searched recursively) or one file")
    send.add_argument("--to", required=True, metavar="AE@HOST:PORT",
                      help="destination, e.g. RADNODE@127.0.0.1:11112")
    send.add_argument("--aet", default="RADNODE-SCU", help="calling AE title")
    send.add_argument("--timeout", type=float, default=30.0, help="network timeout, seconds")

    config = sub.add_parser("config", help="check the configuration or print its reference")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate the configuration file")
    _add_config(check)
    config_sub.add_parser("reference", help="print every setting with its default (Markdown)")

    synth = sub.add_parser(
        "synth", help="write a synthetic CT series (fictitious patient) for trying the node",
    )
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--slices", type=int, default=60)
    synth.add_argument("--size", type=int, default=512, help="rows and columns")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"radnode: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"radnode: cannot start: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        config = _load(args)
        configure_logging(config.node.log_level, config.node.log_format)
        from node.service import Service

        Service(config).serve_forever()
        return 0
    if args.command == "route":
        from node.routing.explain import explain_folder, format_explanations
        from node.routing.router import Router

        config = _load(args)
        if not args.explain.is_dir():
            print(f"radnode: {args.explain} is not a folder", file=sys.stderr)
            return 2
        from node.inference.manifest import load_packages

        models_dir = config.path(config.workers.models_dir)
        packages = load_packages(models_dir) if models_dir.is_dir() else {}
        router = Router(config.routes, {n: p.manifest.accepts for n, p in packages.items()})
        print(format_explanations(explain_folder(args.explain, router, args.calling_ae)))
        return 0
    if args.command == "run":
        from node.offline import run_offline

        config = _load(args)
        configure_logging("WARNING")
        return run_offline(config, args.input, args.model, args.out, force=args.force,
                           modality=args.modality)
    if args.command == "evaluate":
        from node.commands.evaluate import evaluate_command

        return evaluate_command(args.prediction, args.reference, args.map, args.map_file,
                                args.labels, args.json)
    if args.command == "models":
        from node.inference.check import check_models
        from node.inference.manifest import load_packages
        from node.results.templates import template_check

        config = _load(args)
        models_dir = config.path(config.workers.models_dir)
        if args.models_command == "list":
            for name, package in sorted(load_packages(models_dir).items()):
                m = package.manifest
                modalities = ", ".join(m.accepts.modalities)
                print(f"{name} {m.version}  {m.output.kind}  accepts {modalities}"
                      f"  clinical use: {'yes' if m.for_clinical_use else 'no'}")
            return 0
        if args.models_command == "reference":
            return _models_reference(models_dir / "README.md", args.write)
        problems = check_models(models_dir,
                                template_check(config.path(config.results.sr_templates_dir)))
        for problem in problems:
            print(f"ERROR {problem}")
        if problems:
            return 1
        print(f"all models in {models_dir} are valid")
        return 0
    if args.command in ("status", "jobs", "outbox"):
        return _store_command(args)
    if args.command == "send":
        from node.commands.send import send_folder

        return send_folder(args.dir, args.to, args.aet, args.timeout)
    if args.command == "config":
        if args.config_command == "reference":
            print(reference())
            return 0
        config = _load(args)
        print(f"configuration OK: AE {config.node.ae_title} on port {config.node.port}, "
              f"{len(config.routes)} routes, data in {config.data_dir}")
        return 0
    if args.command == "synth":
        from node.synthetic import SeriesGeometry, write_series

        geometry = SeriesGeometry(rows=args.size, columns=args.size, slices=args.slices,
                                  origin=(-0.4 * args.size, -0.4 * args.size, 0.0))
        paths = write_series(args.out, geometry)
        print(f"wrote {len(paths)} slices to {args.out}")
        return 0
    raise AssertionError(args.command)


def _models_reference(readme: Path, write: bool) -> int:
    """``radnode models reference``: the README with its tables made from the schema."""
    from node.inference.reference import regenerate

    try:
        text = regenerate(readme.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"radnode: {readme}: {exc}", file=sys.stderr)
        return 2
    if not write:
        print(text, end="")
        return 0
    if readme.read_text(encoding="utf-8") != text:
        readme.write_text(text, encoding="utf-8")
        print(f"wrote {readme}")
    else:
        print(f"{readme} is up to date")
    return 0


def _store_command(args: argparse.Namespace) -> int:
    from node.commands.status import (
        job_details,
        job_line,
        open_store,
        outbox_line,
        status_report,
    )

    config = _load(args)
    try:
        store = open_store(config.data_dir)
    except FileNotFoundError as exc:
        print(f"radnode: {exc}", file=sys.stderr)
        return 1
    if args.command == "status":
        print(status_report(store, args.recent))
        return 0
    if args.command == "jobs":
        if args.jobs_command == "list":
            for row in store.jobs(state=args.state, limit=args.limit):
                print(job_line(row))
            return 0
        job = store.job(args.id)
        if job is None:
            print(f"radnode: no job {args.id}", file=sys.stderr)
            return 1
        if args.jobs_command == "show":
            print(job_details(job))
            return 0
        if args.jobs_command == "retry":
            if not store.retry_job(job.id):
                print(f"radnode: job {job.id} is {job.state}; only failed or cancelled jobs "
                      "can be retried", file=sys.stderr)
                return 1
            print(f"job {job.id} queued again")
            return 0
        if not store.cancel_job(job.id):
            print(f"radnode: job {job.id} is {job.state}; only queued jobs can be cancelled",
                  file=sys.stderr)
            return 1
        print(f"job {job.id} cancelled")
        return 0
    if args.outbox_command == "list":
        for item in store.outbox_items(state=args.state, limit=args.limit):
            print(outbox_line(item))
        return 0
    count = store.retry_dead(None if args.all else args.id)
    print(f"{count} dead letter{'s' if count != 1 else ''} queued to send again")
    return 0 if count else 1
