"""`make fuzz`: run every harness in this folder for a bounded time and print executions, crashes and hangs.

Each harness runs in its own process with libFuzzer's options: the committed seed corpus (fuzz/corpus/NAME) is
read, new inputs go to outputs/fuzz/corpus/NAME (not committed), and crashing or hanging inputs are written to
outputs/fuzz/ as crash-* / timeout-* files. A crash found becomes a regression test in tests/runtime/.

    python fuzz/run.py [--seconds 60] [--timeout 5]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE.parent / "outputs" / "fuzz"
HARNESSES = {"messages": "fuzz_messages.py", "pipe": "fuzz_pipe.py"}


def run(name: str, seconds: int, timeout: int) -> dict[str, object]:
    work = OUT / "corpus" / name
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE / HARNESSES[name]), str(work), str(HERE / "corpus" / name),
           f"-max_total_time={seconds}", f"-timeout={timeout}", f"-artifact_prefix={OUT}/{name}-",
           "-print_final_stats=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, timeout=seconds + 120)
    log = proc.stdout + proc.stderr
    (OUT / f"{name}.log").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    return {"harness": name, "executions": int(runs[-1]) if runs else 0, "seconds": seconds,
            "crashes": len(re.findall(r"ERROR: libFuzzer: deadly signal|Uncaught Python exception", log)),
            "hangs": len(re.findall(r"ERROR: libFuzzer: timeout", log)), "exit": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="per harness")
    parser.add_argument("--timeout", type=int, default=5, help="seconds one input may take before it is a hang")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = [run(name, args.seconds, args.timeout) for name in HARNESSES]
    print("| harness | seconds | executions | crashes | hangs |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['harness']} | {r['seconds']} | {r['executions']:,} | {r['crashes']} | {r['hangs']} |")
    bad = [r for r in rows if r["crashes"] or r["hangs"] or r["exit"] not in (0,)]
    if bad:
        print(f"findings in {OUT}: " + ", ".join(str(r["harness"]) for r in bad))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
