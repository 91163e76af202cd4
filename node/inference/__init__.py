"""Model packages (``models/<name>/model.toml`` + ``model.onnx``) and running them on a Volume."""

from node.inference.check import Problem, check_model, check_models
from node.inference.manifest import (
    Accepts,
    Manifest,
    ManifestError,
    ModelPackage,
    load_manifest,
    load_package,
    load_packages,
)
from node.inference.output import Box, ModelOutput, Timings
from node.inference.run import run_model
from node.inference.runtime import SessionRegistry, default_registry

__all__ = [
    "Accepts",
    "Box",
    "Manifest",
    "ManifestError",
    "ModelOutput",
    "ModelPackage",
    "Problem",
    "SessionRegistry",
    "Timings",
    "check_model",
    "check_models",
    "default_registry",
    "load_manifest",
    "load_package",
    "load_packages",
    "run_model",
]
