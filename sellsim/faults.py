"""Fault injection: which request gets a 429, a 5xx, an HTML page, a delay or a dropped connection.

Owns the fault rule format (documented in README "Faults") and the pure decision of which rule,
if any, fires for a request. Rules keep their own match counters so "the next N requests" and
"the 3rd and 5th request" are deterministic.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass, field
from typing import Any

KINDS = {"429", "500", "502", "503", "504", "html", "slow", "drop", "drop_after"}


@dataclass
class FaultRule:
    kind: str
    path: str = "*"
    method: str | None = None
    probability: float | None = None
    schedule: set[int] | None = None
    count: int | None = None
    delay: float = 1.0
    status: int = 503  # status of an "html" fault
    seen: int = 0  # matching requests so far
    fired: int = 0

    @classmethod
    def parse(cls, spec: Any) -> FaultRule:
        if not isinstance(spec, dict):
            raise ValueError("a fault rule is an object")
        unknown = set(spec) - {
            "kind",
            "path",
            "method",
            "probability",
            "schedule",
            "count",
            "delay",
            "status",
        }
        if unknown:
            raise ValueError(f"unknown fault rule keys {sorted(unknown)}")
        kind = str(spec.get("kind"))
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {sorted(KINDS)}")
        modes = [k for k in ("probability", "schedule", "count") if k in spec]
        if len(modes) > 1:
            raise ValueError("give at most one of probability, schedule, count")
        rule = cls(kind=kind, path=str(spec.get("path", "*")))
        if spec.get("method") is not None:
            rule.method = str(spec["method"]).upper()
        if "probability" in spec:
            p = spec["probability"]
            if not isinstance(p, int | float) or not 0 <= p <= 1:
                raise ValueError("probability is a number from 0 to 1")
            rule.probability = float(p)
        if "schedule" in spec:
            sched = spec["schedule"]
            if not isinstance(sched, list) or not all(isinstance(n, int) and n > 0 for n in sched):
                raise ValueError("schedule is a list of 1-based request ordinals")
            rule.schedule = set(sched)
        if "count" in spec:
            if not isinstance(spec["count"], int) or spec["count"] < 0:
                raise ValueError("count is a non-negative integer")
            rule.count = spec["count"]
        if "delay" in spec:
            if not isinstance(spec["delay"], int | float) or spec["delay"] < 0:
                raise ValueError("delay is a non-negative number of seconds")
            rule.delay = float(spec["delay"])
        if "status" in spec:
            if not isinstance(spec["status"], int) or not 400 <= spec["status"] <= 599:
                raise ValueError("status is an HTTP error status")
            rule.status = spec["status"]
        return rule

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "path": self.path,
            "seen": self.seen,
            "fired": self.fired,
        }
        if self.method:
            out["method"] = self.method
        if self.probability is not None:
            out["probability"] = self.probability
        if self.schedule is not None:
            out["schedule"] = sorted(self.schedule)
        if self.count is not None:
            out["count"] = self.count
        if self.kind == "slow":
            out["delay"] = self.delay
        if self.kind == "html":
            out["status"] = self.status
        return out

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.path)

    def fires(self, rng: random.Random) -> bool:
        """Called once per matching request, after ``seen`` was incremented."""
        if self.schedule is not None:
            return self.seen in self.schedule
        if self.count is not None:
            if self.count > 0:
                self.count -= 1
                return True
            return False
        if self.probability is not None:
            return rng.random() < self.probability
        return True  # no mode: every matching request


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def set(self, specs: Any, seed: int | None = None) -> None:
        if isinstance(specs, dict):
            seed = specs.get("seed", seed)
            specs = specs.get("rules", [])
        if not isinstance(specs, list):
            raise ValueError("faults are a list of rules or {'rules': [...], 'seed': N}")
        rules = [FaultRule.parse(s) for s in specs]
        self.rules = rules
        self.rng = random.Random(seed if seed is not None else 0)

    def clear(self) -> None:
        self.rules = []

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The first rule that fires for this request; every matching rule counts it."""
        chosen = None
        for rule in self.rules:
            if not rule.matches(method, path):
                continue
            rule.seen += 1
            if chosen is None and rule.fires(self.rng):
                rule.fired += 1
                chosen = rule
        return chosen
