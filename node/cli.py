"""The ``radnode`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from node import __version__
from node.config import Config, ConfigError, load_config, reference
from node.log import configure_logging

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


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        config = _load(args)
        configure_logging(config.node.log_level)
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
        print(format_explanations(explain_folder(args.explain, Router(config.routes),
                                                 args.calling_ae)))
        return 0
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
