"""Run every benchmark in benchmarks/ one after the other and write benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py            # normal modes, under 10 minutes
    .venv/bin/python benchmarks/run_all.py --quick    # every script's quick mode (~1-2 min)

Each ``bench_*.py`` script runs in its own process (sequentially, so they do not disturb
each other) in its normal mode when the remaining time budget allows, else in its quick
mode; a normal run that overruns its share is stopped and replaced by a quick run. The
report holds the machine (CPU, cores, Python, Redis, the versions of quotaguard and of
every peer library), a summary of the runs, and each script's own tables, with the
ratios to the peers and references that the scripts compute side by side.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGET = 570.0  # seconds: ten minutes, less a margin for the report

# script -> (normal arguments, quick arguments); bench_memory.py's normal mode (1M
# customers for the memory figure) alone takes over 6 minutes on a 2-core machine, so
# its quick mode is the default here: run it directly for the full figures.
MODES: dict[str, tuple[list[str], list[str]]] = {
    "bench_memory.py": (["--quick"], ["--quick"]),
    "bench_redis.py": ([], ["--quick"]),
    "bench_asgi.py": ([], ["--requests", "2000", "--rounds", "3"]),
    "bench_exporter.py": ([], ["--rounds", "3", "--calls", "10000"]),
}
QUICK_RESERVE = 45.0  # seconds kept per remaining script for its quick mode

PACKAGES = [
    "quotaguard",
    "limits",
    "pyrate-limiter",
    "throttled-py",
    "slowapi",
    "token-bucket",
    "redis",
    "hiredis",
    "prometheus-client",
    "starlette",
    "fastapi",
    "uvicorn",
    "httpx",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> list[tuple[str, str]]:
    found = []
    for name in PACKAGES:
        try:
            found.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            found.append((name, "not installed"))
    return found


def redis_version() -> str:
    server = shutil.which("redis-server")
    if server is None:
        return "not installed"
    output = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\S+)", output)
    return match.group(1) if match else output.strip()


def run(script: str, arguments: list[str], timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output, seconds)."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, str(HERE / script), *arguments],
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or b""
        text = out.decode() if isinstance(out, bytes) else out
        return None, text, time.monotonic() - started
    output = result.stdout
    if result.returncode:
        output += "\n" + result.stderr[-3000:]
    return result.returncode, output, time.monotonic() - started


def demote(markdown: str) -> str:
    """Shift every heading two levels down, so a script's report nests in RESULTS.md."""
    return re.sub(
        r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", markdown, flags=re.M
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every script's quick mode")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for all scripts")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    scripts = sorted(path.name for path in HERE.glob("bench_*.py"))
    deadline = time.monotonic() + args.budget
    sections: list[str] = []
    summary: list[tuple[str, str, str, str]] = []
    failed = False
    for index, script in enumerate(scripts):
        normal, quick = MODES.get(script, ([], ["--quick"]))
        remaining_after = (len(scripts) - index - 1) * QUICK_RESERVE
        share = deadline - time.monotonic() - remaining_after
        mode, arguments = ("quick", quick) if args.quick else ("normal", normal)
        if mode == "normal" and share < QUICK_RESERVE * 2:
            mode, arguments = "quick", quick
        print(f"running {script} ({mode}) ...", file=sys.stderr, flush=True)
        if mode == "normal" and arguments == quick:
            mode = "quick (normal takes too long)"
        # a normal run leaves time for this script's quick run if it overruns
        timeout = share - QUICK_RESERVE if mode == "normal" else share
        code, output, seconds = run(script, arguments, timeout)
        if code is None and mode == "normal":
            print(f"  {script} overran {timeout:.0f}s; quick mode instead", file=sys.stderr)
            mode = f"quick (normal overran {timeout:.0f}s)"
            share = deadline - time.monotonic() - remaining_after
            code, output, seconds = run(script, quick, share)
        status = "ok" if code == 0 else ("timed out" if code is None else f"exit {code}")
        if code == 1 and re.search(r"not met", output, re.I):
            status += ": a target was not met"
        failed |= code != 0
        summary.append((script, mode, f"{seconds:.0f}", status))
        print(f"  {status} in {seconds:.0f}s", file=sys.stderr, flush=True)
        sections.append(f"## {script} ({mode}, {seconds:.0f} s, {status})\n\n{demote(output)}")

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# quotaguard benchmark results",
        "",
        f"Written by `benchmarks/run_all.py` on {now}. One run per script, sequentially;",
        "the machine may be noisy, so compare the ratios measured side by side in one table",
        "rather than absolute figures across tables or machines.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {cpu_model()} |",
        f"| cores | {os.cpu_count()} |",
        f"| OS | {platform.platform()} |",
        f"| Python | {platform.python_implementation()} {platform.python_version()} |",
        f"| redis-server | {redis_version()} |",
        *(f"| {name} | {version} |" for name, version in versions()),
        "",
        "## Runs",
        "",
        "| script | mode | seconds | status |",
        "| --- | --- | ---: | --- |",
        *(
            f"| {script} | {mode} | {seconds} | {status} |"
            for script, mode, seconds, status in summary
        ),
        "",
        *sections,
    ]
    args.output.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
