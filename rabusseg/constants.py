"""Values that several layers must agree on, defined once (the lowest layer: no imports)."""

from __future__ import annotations

IGNORE_INDEX = 255
"""Label of pixels that carry no supervision: crop padding, filtered pseudo-labels."""
LESION_THRESHOLD = 0.5
"""A pixel is lesion when its lesion probability (1 - background) exceeds this: evaluation,
prediction and the workbench all use it (the workbench's slider starts there)."""
DEFAULT_INFERENCE_SIZE = 512
"""Inference size of checkpoints whose config does not say (``data.eval_size``'s default)."""
CRA_COSINE_TEMPERATURE = 0.1
"""Temperature of CRA's cosine logits (``method.cra_similarity: cosine``): the usual value of
contrastive and relation-distillation losses, fixed before any measurement, not tuned."""
