"""Scaling out: batch inference and evaluation on a Ray cluster (Ray Data), the runtime layer's
engine for more images than one process should classify. Never imports torch; Ray itself is the
optional `ray` extra, imported only when a job runs.

- sources.py: what a job reads — folders, globs, `@file` lists, URIs — listed like the local engine.
- engine.py: the cluster (local, joined, or the caller's), the actor pool sized from its resources,
  the pipeline: decoding tasks → actors that each hold one Model.
- shards.py: the results folder — Parquet or JSON Lines shards written atomically, resumable.
- jobs.py: `infer_to_folder` and `evaluate_ray`, what `toolkit infer|eval --engine ray` run.
"""

from toolkit.edge.scale.engine import RayOptions, ScaleError, require_ray
from toolkit.edge.scale.jobs import InferSummary, evaluate_ray, infer_to_folder
from toolkit.edge.scale.shards import FORMATS, ShardError, read_results
from toolkit.edge.scale.sources import list_sources

__all__ = ["FORMATS", "InferSummary", "RayOptions", "ScaleError", "ShardError", "evaluate_ray", "infer_to_folder",
           "list_sources", "read_results", "require_ray"]
