"""radnode: a DICOM node that receives studies, runs ONNX models and returns SEG and TID 1500 SR."""

__version__ = "0.1.0"
