"""``featuremaps doctor``: what this machine can run, per provider, and why not.

The first thing to run on a new machine (a GPU box above all): which providers can run, the
reason and the fix for each that cannot, the CPU's matrix units, the NVIDIA driver, devices and
compute capabilities, where the CUDA/cuDNN and TensorRT libraries were found, OpenVINO's
devices, and which provider and math mode ``--provider auto`` and ``--fast`` would pick. It
builds no session and always exits 0; ``--json`` prints the same facts for scripts.
"""

from __future__ import annotations

import argparse
import json

from ..engine.doctor import Report, diagnose
from ..errors import terminal_text as _safe  # driver and library strings reach a terminal


def register(sub) -> None:
    p = sub.add_parser("doctor", help="say which providers can run here, why not, and what auto/--fast pick",
                       description="Check every execution provider on this machine without building a session: "
                                   "CPU matrix units, NVIDIA driver and devices, CUDA/cuDNN and TensorRT "
                                   "libraries, OpenVINO devices; and which provider and math mode --provider "
                                   "auto and --fast would pick. Exits 0; --json for scripts.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_doctor)


def format_report(r: Report) -> list[str]:
    width = max(len(c.provider) for c in r.checks) + 2
    lines = ["featuremaps doctor: what this machine can run"]
    for c in r.checks:
        lines.append(f"  {c.provider:<{width}}{'yes' if c.ok else 'no ':<5}{_safe(c.reason or '')}".rstrip())
        lines += [f"  {'':<{width}}     {k}: {_safe(v)}" for k, v in c.details.items()]
    lines.append(f"  --provider auto picks: {_safe(r.auto.reason)}")
    lines.append(f"  with --fast:           {_safe(r.fast.reason)}")
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items() if v)
    lines.append(f"  versions: {_safe(versions)}")
    return lines


def cmd_doctor(args: argparse.Namespace) -> int:
    report = diagnose()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(format_report(report)))
    return 0
