"""Beam PTransforms and DoFns built on semsim_core: read, drop duplicate ids, exact pre-pass, embed, find pairs,
cluster, write."""

METRICS_NAMESPACE = "semsim"
DEAD_LETTER = "dead_letter"
