"""What a Prometheus collector costs the producers: W1 with and without it, side by side.

Runs ``compare.py --case W1:tempo:SIZE`` in fresh processes, alternating
"none" (as ``make bench`` runs it) and "scraped": the same run with a
``tempo.metrics.PrometheusCollector`` registered in a registry and a thread
that renders that registry (``prometheus_client.generate_latest``, what the
HTTP endpoint does per scrape) every 100 ms for the whole run. Prints the
medians and scraped/none; docs/performance.md quotes it::

    .venv/bin/python bench/metrics_overhead.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = "CASE_RESULT "

#: Prepended to compare.py in the "scraped" runs.
SCRAPER = """
import atexit, threading, time, prometheus_client, tempo.metrics
registry = prometheus_client.CollectorRegistry()
registry.register(tempo.metrics.PrometheusCollector())
SCRAPES = [0, 0.0]  # scrapes, CPU seconds they took
def scrape():
    while True:
        t0 = time.thread_time()
        prometheus_client.generate_latest(registry)
        SCRAPES[1] += time.thread_time() - t0
        SCRAPES[0] += 1
        threading.Event().wait({period})
threading.Thread(target=scrape, daemon=True).start()
atexit.register(lambda: print("SCRAPES", SCRAPES[0], SCRAPES[1], flush=True))
"""

RUNNER = """
import runpy, sys
sys.argv = {argv!r}
{setup}
runpy.run_path({path!r}, run_name="__main__")
"""


def run(mode: str, case: str, items: int, period: float) -> dict:
    argv = [str(HERE / "compare.py"), "--case", case, "--items", str(items)]
    setup = SCRAPER.format(period=period) if mode == "scraped" else ""
    code = RUNNER.format(argv=argv, setup=setup, path=str(HERE / "compare.py"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(PREFIX):
            result = json.loads(line[len(PREFIX):])
        elif line.startswith("SCRAPES ") and result is not None:
            result["scrapes"] = int(line.split()[1])
            result["scrape_cpu_us"] = float(line.split()[2]) / result["scrapes"] * 1e6
    if result is not None:
        if mode == "scraped" and not result.get("scrapes"):
            raise RuntimeError("the scraper did not run")
        return result
    raise RuntimeError(f"{mode} {case}: {proc.stderr.strip().splitlines()[-3:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="W1:tempo:16", help="WORKLOAD:IMPL:SIZE, comma-separated")
    ap.add_argument("--items", type=int, default=1 << 22, help="payloads per run (a multiple of 1024)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per mode")
    ap.add_argument("--period", type=float, default=0.1, help="seconds between scrapes")
    args = ap.parse_args(argv)
    print(f"{args.repeat} alternated runs per mode, {args.items} payloads, a scrape every "
          f"{args.period:g} s in the scraped runs")
    for case in args.cases.split(","):
        rates: dict[str, list[float]] = {"none": [], "scraped": []}
        cpu: dict[str, list[float]] = {"none": [], "scraped": []}
        scrapes: list[int] = []
        scrape_cpu: list[float] = []
        for _ in range(args.repeat):
            for mode in rates:
                r = run(mode, case, args.items, args.period)
                rates[mode].append(r["items_per_s"])
                cpu[mode].append(r["cpu_ns_per_item"])
                if mode == "scraped":
                    scrapes.append(r["scrapes"])
                    scrape_cpu.append(r["scrape_cpu_us"])
        a, b = statistics.median(rates["none"]), statistics.median(rates["scraped"])
        print(f"{case}: median none {a / 1e6:.2f}, scraped {b / 1e6:.2f} M items/s, "
              f"scraped/none {b / a:.3f}; best scraped/none "
              f"{max(rates['scraped']) / max(rates['none']):.3f}; CPU ns/item (least) "
              f"none {min(cpu['none']):.0f}, scraped {min(cpu['scraped']):.0f}", flush=True)
        print(f"  none {[round(r / 1e6, 2) for r in rates['none']]}, "
              f"scraped {[round(r / 1e6, 2) for r in rates['scraped']]} "
              f"({min(scrapes)}-{max(scrapes)} scrapes per run, median "
              f"{statistics.median(scrape_cpu):.0f} us of CPU each)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
