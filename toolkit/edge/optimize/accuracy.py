"""Accuracy of the candidates, through the one evaluate path (infer.evaluate_stream): fp32 on
onnxruntime's CPU provider is the reference; every candidate variant (file, provider, hint) is
evaluated once on the selection split, and only the winner (with fp32) on the report split.
Quantized files are built here, once each, by the quantize stage with its own guard and gate."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.edge.data.datasets import SplitListing
from toolkit.edge.errors import first_line, shown
from toolkit.edge.infer import Evaluation, evaluate_stream
from toolkit.edge.optimize.candidates import Candidate
from toolkit.edge.optimize.config import OptimizeError
from toolkit.edge.optimize.split import Parts
from toolkit.edge.quantize.config import QuantizeOptions
from toolkit.edge.runtime import Model, ModelError, ProviderError, open_model

REFERENCE_PROVIDER = "cpu"
REFERENCE = ("fp32", REFERENCE_PROVIDER, None)       # the variant (file, provider, hint) fp32 is measured as


def correct(result: Evaluation) -> np.ndarray:
    return result.predictions == result.targets


class Accuracy:
    """The reference's predictions, the built files and each variant's numbers on selection."""

    def __init__(self, source: Path, data: Path, parts: Parts, workdir: Path, quantize: QuantizeOptions,
                 log: Callable[[str], None]):
        self.source, self.data, self.parts, self.workdir = source, data, parts, workdir
        self.quantize, self.log = quantize, log
        self.files: dict[str, Path | str] = {"fp32": source}      # kind → path, or why it could not be built
        self.reference: Evaluation | None = None
        self.skipped: list[str] = []

    def _stream(self, models: list[Model], listing: SplitListing, failures: list[str]) -> list[Evaluation]:
        def image_failed(message: str) -> None:
            if message not in self.skipped:
                self.skipped.append(message)
        return evaluate_stream(models, listing, shown(self.data), image_failed, on_model_error=failures.append)

    def evaluate_reference(self) -> float:
        """fp32 on the selection split; returns its seconds. OptimizeError when fp32 cannot run."""
        start = time.perf_counter()
        failures: list[str] = []
        try:
            model = open_model(self.source, REFERENCE_PROVIDER, threads=None)
        except (ModelError, ProviderError) as exc:
            raise OptimizeError(first_line(exc)) from None
        results = self._stream([model], self.parts.selection, failures)
        if not results:
            raise OptimizeError(failures[0] if failures else f"{shown(self.data)}: no readable selection images")
        self.reference = results[0]
        return time.perf_counter() - start

    def build(self, kind: str) -> Path | str:
        """The file of `kind` (built at its first use), or the one line saying why it could not be."""
        if kind not in self.files:
            from toolkit.edge.quantize.classifier import quantize_classifier
            from toolkit.edge.quantize.variants import QuantizeError

            precision, _, target = kind.partition("-")
            options = QuantizeOptions(**{**vars(self.quantize), "precision": precision, "target": target or "cpu"})
            out = self.workdir / f"{kind}.onnx"
            try:
                quantize_classifier(self.source, out, self.data, options, log=self.log)
                self.files[kind] = out
            except (QuantizeError, ValueError, OSError) as exc:
                self.files[kind] = f"{kind} could not be built: {first_line(exc)}"
            except Exception as exc:  # noqa: BLE001  (the quantizer's runtime raises its own types; one file's failure)
                self.files[kind] = f"{kind} could not be built: {type(exc).__name__}: {first_line(exc)}"
        return self.files[kind]

    def evaluate(self, group: list[Candidate]) -> None:
        """Evaluate each distinct variant of `group` (candidates of one file) on the selection split,
        in one pass over the images; set each candidate's drop and agreement, or reject it."""
        variants: dict[tuple, Model] = {}
        for c in group:
            if c.variant == REFERENCE:                                 # the reference itself
                c.drop, c.agreement = (0.0 if self.parts.labelled else None), 1.0
                continue
            if c.variant in variants or c.status == "rejected":
                continue
            try:
                variants[c.variant] = open_model(c.path or self.source, c.provider, precision_hint=c.hint)
            except (ModelError, ProviderError) as exc:
                self._reject(group, c.variant, f"cannot open: {first_line(exc)}")
        if not variants:
            return
        failures: list[str] = []
        results = self._stream(list(variants.values()), self.parts.selection, failures)
        if len(results) != len(variants):          # one failed: which one, each on its own says
            results = []
            for key, model in variants.items():
                failures = []
                alone = self._stream([model], self.parts.selection, failures)
                if alone:
                    results.append(alone[0])
                else:
                    self._reject(group, key, failures[0] if failures else "evaluation failed")
            variants = {k: m for k, m in variants.items() if any(c.variant == k and c.status != "rejected"
                                                                 for c in group)}
        for key, result in zip(variants, results):
            for c in group:
                if c.variant == key and self.reference is not None:
                    c.drop = (self.reference.accuracy - result.accuracy) * 100 if self.parts.labelled else None
                    c.agreement = float(np.mean(result.predictions == self.reference.predictions))

    @staticmethod
    def _reject(group: list[Candidate], variant: tuple, reason: str) -> None:
        for c in group:
            if c.variant == variant:
                c.status, c.reason = "rejected", reason

    def report(self, winner: Candidate) -> tuple[Evaluation, Evaluation]:
        """(fp32, winner) on the report split, in one pass: the numbers the report states."""
        models = [open_model(self.source, REFERENCE_PROVIDER)]
        models.append(open_model(winner.path or self.source, winner.provider, precision_hint=winner.hint))
        failures: list[str] = []
        results = self._stream(models, self.parts.report, failures)
        if len(results) != 2:
            raise OptimizeError(failures[0] if failures else "the report split could not be evaluated")
        return results[0], results[1]
