"""Command-line options shared by the commands that decode a model (``decode``, ``evaluate``)."""

from __future__ import annotations

from ..evaluate import DEFAULT_K, EVALUATORS


def add_decode_options(parser) -> None:
    """``--evaluator``, ``--k`` and ``--layers``, one definition for every decoding command."""
    parser.add_argument(
        "--evaluator",
        choices=sorted(EVALUATORS),
        default="dense",
        help="dense: exact 3-sigma footprints, fastest (default); knn: the K Gaussians contributing most at "
        "each voxel (exact where at most K reach it); knn-centres: the paper's K nearest centres (loses dB on "
        "trained models); reference: brute force, slow",
    )
    parser.add_argument("--k", type=int, default=DEFAULT_K,
                        help=f"Gaussians per voxel for --evaluator knn or knn-centres (default {DEFAULT_K})")
    parser.add_argument(
        "--layers", choices=("all", "base"), default=None,
        help="all: the Gaussians plus the file's enhancement layer (the default when the file has one; needs "
        "--evaluator dense or reference); base: the Gaussians alone",
    )
