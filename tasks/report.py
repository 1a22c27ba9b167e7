"""What a trainable reports to Tune, as one documented type.

Every trainable calls ``report(Report(...))`` at each evaluation. A Report
holds the metrics of each configuration the trial trains (one, or the K of a
block, in block order), the step, whether this is the configuration's last
report (``final``: a trial that ends without one was cut short), and the Ray
node it ran on. On the wire (:meth:`Report.to_tune`) it is a flat dict; for a
single configuration its metrics are also top-level keys, so Tune schedulers
(ASHA) can read the stage's metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

FINAL = "final"  # not "done": Tune sets its own ``done`` on the last result
REPORTED_AT = "reported_at"


@dataclass(frozen=True)
class Report:
    """One evaluation: ``metrics[i]`` = flat float metrics of configuration i (see :func:`configurations`)."""

    step: int
    final: bool
    metrics: list[dict]
    node_id: str | None = None
    extra: dict = field(default_factory=dict)  # trial-level facts (e.g. environment steps), copied to every row

    def to_tune(self) -> dict:
        out = {"step": self.step, FINAL: self.final, "metrics": self.metrics, "node_id": self.node_id, **self.extra}
        if len(self.metrics) == 1:
            out.update(self.metrics[0])
        return out

    @classmethod
    def from_tune(cls, result: dict) -> "Report":
        """The Report a Tune result carries (Tune's own keys ignored)."""
        return cls(int(result.get("step", 0)), bool(result.get(FINAL, False)), list(result.get("metrics", [])), result.get("node_id"))


def configurations(config: dict) -> list[dict]:
    """The configurations a trial's config trains: the config itself, or each ``block`` entry merged over the shared keys."""
    if "block" not in config:
        return [config]
    shared = {k: v for k, v in config.items() if k != "block"}
    return [{**shared, **entry} for entry in config["block"]]


def tune_reporter() -> Callable[[Report], None]:
    """``tune.report`` for Reports, stamping this trial's Ray node id (looked up once) and the time of the report
    (``reported_at``, seconds since the epoch on the trial's node: a row's ``finished_at`` is its final report's)."""
    import time

    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()

    def report(r: Report, checkpoint=None) -> None:
        tune.report({**r.to_tune(), "node_id": node_id, REPORTED_AT: time.time()}, checkpoint=checkpoint)

    return report
