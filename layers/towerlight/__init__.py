"""Towerlight runtime: everything the Lambda functions need to serve, track and learn.

Nothing in this package may import torch, scikit-learn or scipy (see tests/unit/test_layering.py).
"""

__version__ = "0.1.0"
