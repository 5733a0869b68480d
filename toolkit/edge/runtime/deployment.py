"""The deployment a file carries: how `toolkit optimize` found it runs best on the machine it
measured (metadata key `toolkit.deployment`, JSON). Standard library only, beside streams.py.

`open_model`, `toolkit infer` and `toolkit bench` take these settings for that file unless the
caller says otherwise: an explicit provider wins, and the deployment's schedule, threads and
precision hint then apply only when that provider is the deployment's own (they mean nothing to
another one). A provider the deployment names that cannot run here is an error, never a silent
run elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from toolkit.edge.runtime.registry import PROVIDER_TABLE
from toolkit.edge.runtime.streams import PLAIN, Schedule

DEPLOYMENT_KEY = "toolkit.deployment"


class DeploymentError(ValueError):
    """A `toolkit.deployment` value that cannot be read; one line for the user."""


@dataclass(frozen=True)
class Deployment:
    """Where and how to run the file: `provider` (a registry name), `schedule` (Schedule.spec:
    `1`, `2`, `2x32`), `threads` (None: the runtime's default), `precision_hint` (openvino: f32 |
    bf16), and what it was chosen for: `objective` (latency | throughput) at `batch_size`."""
    provider: str
    schedule: str = "1"
    threads: int | None = None
    precision_hint: str | None = None
    objective: str = "latency"
    batch_size: int = 1

    @property
    def plan(self) -> Schedule:
        return Schedule.parse(self.schedule)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    def describe(self) -> str:
        parts = [self.provider]
        parts += [f"schedule {self.schedule}"] if self.schedule != "1" else []
        parts += [f"{self.threads} thread{'s' if self.threads > 1 else ''}"] if self.threads else []
        parts += [f"hint {self.precision_hint}"] if self.precision_hint else []
        return ", ".join(parts)


def deployment_of(metadata: dict[str, str], where: str = "the model") -> Deployment | None:
    """The deployment in a file's metadata, None without one; DeploymentError when it is malformed."""
    text = metadata.get(DEPLOYMENT_KEY)
    if text is None:
        return None
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        found = Deployment(**raw)
        found.plan  # noqa: B018  (parses the schedule)
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"{where}: metadata {DEPLOYMENT_KEY} is not a deployment ({exc})") from None
    if found.provider not in PROVIDER_TABLE:
        raise DeploymentError(f"{where}: metadata {DEPLOYMENT_KEY} names an unknown provider {found.provider!r}")
    if found.threads is not None and (not isinstance(found.threads, int) or found.threads < 1):
        raise DeploymentError(f"{where}: metadata {DEPLOYMENT_KEY} has threads {found.threads!r}, not a count ≥ 1")
    return found


@dataclass(frozen=True)
class Settings:
    """What a model is opened with once the caller's choices and the deployment are combined."""
    provider: str
    threads: int | None
    schedule: Schedule
    precision_hint: str | None


def settle(deployment: Deployment | None, provider: str | None, threads: int | None,
           schedule: Schedule | None, precision_hint: str | None) -> Settings:
    """The caller's explicit choices (not None) win; the rest come from the deployment when its
    provider is the one that runs, else the plain defaults (cpu, the runtime's threads, one call)."""
    mine = deployment is not None and provider in (None, deployment.provider)
    if not mine or deployment is None:
        return Settings(provider or "cpu", threads, schedule or PLAIN, precision_hint)
    return Settings(deployment.provider, threads if threads is not None else deployment.threads,
                    schedule if schedule is not None else deployment.plan,
                    precision_hint if precision_hint is not None else deployment.precision_hint)
