"""crad: trainer for CRAD (continuous memory representation anomaly detection).

The package is laid out in the order the data flows: backbones/ (frozen feature extractors),
model.py (the CRAD module and the detector around it), scores.py (smoothing and image score),
train.py, export.py (the ONNX model file the daemon reads) and the CLI in __main__.py.
Below them all: metrics.py (the evaluation metrics on arrays) and files.py (the one atomic
write). Imports only go down the layers of tests/test_layers.py, and never in a circle.
Importing the package itself stays cheap (no torch) so that `python -m crad --help` is fast.
"""

__version__ = "0.1.0"
