"""The bench sections of report.json as a JSON-Schema subset, and a small validator for it.

`jsonschema` is not a dependency; `validate` understands the keywords used here: type (a name or
a list of names), properties, required, additionalProperties (bool), items, enum, minimum.
benchmarks/SCHEMA.md documents the same fields for people; tests keep the two in step.
"""

from __future__ import annotations

from typing import Any

NUM = {"type": ["number", "null"]}
STR = {"type": ["string", "null"]}
INT = {"type": ["integer", "null"]}

LATENCY = {
    "type": ["object", "null"],
    "required": ["mean", "std", "min", "p50", "p90", "p95", "p99", "max"],
    "properties": {
        k: {"type": "number", "minimum": 0} for k in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")
    },
    "additionalProperties": False,
}

# Fields shared by artifact and reference (teacher / PyTorch student) measurements.
MEASUREMENT_PROPERTIES: dict[str, dict] = {
    "name": {"type": "string"},
    "model": {"type": "string", "enum": ["student", "teacher"]},
    "format": {"type": "string"},
    "precision": STR,
    "runtime": STR,
    "runtime_version": STR,
    "path": STR,
    "sha256": STR,
    "size_bytes": INT,
    "status": {"type": "string", "enum": ["ok", "failed", "skipped", "timeout", "unverified"]},
    "reason": STR,
    "profile": STR,
    "threads": INT,
    "threads_requested": INT,
    "cpus": {"type": ["array", "null"], "items": {"type": "integer"}},
    "pinned": {"type": ["boolean", "null"]},
    "accuracy": NUM,
    "agreement_teacher": NUM,
    "agreement_student": NUM,
    "accuracy_images": INT,
    "max_abs_logit_diff_vs_pytorch": NUM,
    "latency_ms": LATENCY,
    "throughput_ips": NUM,
    "queries": INT,
    "timed_seconds": NUM,
    "early_stop": {"type": ["boolean", "null"]},
    "peak_rss_mb": NUM,
    "baseline_rss_mb": NUM,
    "import_ms": NUM,
    "load_ms": NUM,
    "first_inference_ms": NUM,
    "macs": INT,
    "compute_bound_ms": NUM,
    "parity_status": STR,
    "parity": {"type": ["object", "null"]},
    "bench_json": STR,
}

MEASUREMENT_REQUIRED = [
    "name",
    "model",
    "format",
    "precision",
    "path",
    "sha256",
    "size_bytes",
    "status",
    "reason",
    "accuracy",
    "agreement_teacher",
    "agreement_student",
    "latency_ms",
    "throughput_ips",
    "peak_rss_mb",
    "load_ms",
    "first_inference_ms",
    "threads",
    "profile",
    "parity_status",
]

MEASUREMENT = {
    "type": "object",
    "required": MEASUREMENT_REQUIRED,
    "properties": MEASUREMENT_PROPERTIES,
    "additionalProperties": False,
}

GOAL = {
    "type": "object",
    "required": ["name", "target", "value", "status", "detail"],
    "properties": {
        "name": {"type": "string"},
        "target": {"type": "string"},
        "value": NUM,
        "status": {"type": "string", "enum": ["met", "not met", "unknown"]},
        "detail": {"type": "string"},
    },
    "additionalProperties": False,
}

BENCH_MACHINE = {
    "type": "object",
    "required": ["cpu", "cores", "cores_available", "runtimes", "profiles", "compute_peak"],
    "properties": {
        "cpu": {"type": "string"},
        "cores": INT,
        "cores_available": {"type": "integer"},
        "profiles": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["profile", "threads_requested", "threads", "cpus", "pinned"],
                "properties": {
                    "profile": {"type": "string"},
                    "threads_requested": {"type": "integer", "minimum": 1},
                    "threads": {"type": "integer", "minimum": 1},
                    "cpus": {"type": "array", "items": {"type": "integer"}},
                    "pinned": {"type": "boolean"},
                    "cores_available": {"type": "integer"},
                },
            },
        },
        "runtimes": {"type": "object"},
        "compute_peak": {"type": "object"},
    },
}

BENCH_SETTINGS = {
    "type": "object",
    "required": ["min_queries", "min_seconds", "warmup"],
    "properties": {
        "min_queries": {"type": "integer", "minimum": 1},
        "min_seconds": {"type": "number", "minimum": 0},
        "warmup": {"type": "integer", "minimum": 0},
        "accuracy_images": INT,
    },
}

REPORT_BENCH_SCHEMA = {
    "type": "object",
    "required": ["artifacts", "teacher_bench", "bench_machine", "goals"],
    "properties": {
        "artifacts": {"type": "array", "items": MEASUREMENT},
        "teacher_bench": {"type": "array", "items": MEASUREMENT},
        "student_bench": {"type": "array", "items": MEASUREMENT},
        "bench_machine": BENCH_MACHINE,
        "bench_settings": BENCH_SETTINGS,
        "goals": {"type": "array", "items": GOAL},
        "headline": STR,
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    """All violations of `schema` by `value`, each as 'path: message'."""
    out: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in names):
            return [f"{path}: expected {'/'.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        out.append(f"{path}: {value} < minimum {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing required key {key!r}")
        for key, v in value.items():
            if key in props:
                out += errors(v, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += errors(v, schema["items"], f"{path}[{i}]")
    return out


def validate_report(report: dict) -> list[str]:
    """Violations of the bench sections of a report.json (empty list: valid)."""
    return errors(report, REPORT_BENCH_SCHEMA)
