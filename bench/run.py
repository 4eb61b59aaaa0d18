"""`make bench`: every figure of issue 7 in one run, each next to its ceiling, as a ratio.

1. signing engine: certificates built and signed per second against raw C_Sign (sign_bench.py)
2. end to end: Certificates created at once until Ready, against the API write ceiling
3. memory: the operator's RSS idle and with 1,000 Ready Certificates
4. 1 and 2 again through `p11-kit server` (the sidecar path)
5. PKCS#11 calls per issued certificate (pkcs11-spy) against the minimum
6. restart with Ready Certificates: signatures and API writes until idle

Results: bench/results/<date>-<host>.json and .md, and bench/results/latest.md.
See bench/README.md for what each figure measures exactly.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import cluster_bench
import sign_bench

from pkcs11_issuer.dev.controlplane import locate_binaries

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FIGURES = (1, 2, 3, 4, 5, 6)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Quick smoke run: bench/run.py --certificates 50 --memory-certificates 100 "
        "--spy-certificates 10 --seconds 1",
    )
    parser.add_argument("--figures", default="1,2,3,4,5,6", help="which figures (default: all six)")
    parser.add_argument(
        "--certificates", type=int, default=500, help="created at once (figures 2, 4, 6)"
    )
    parser.add_argument("--memory-certificates", type=int, default=1000, help="Ready for figure 3")
    parser.add_argument(
        "--spy-certificates", type=int, default=50, help="counted through pkcs11-spy (figure 5)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="the operator's `concurrency` (its default)"
    )
    parser.add_argument(
        "--create-concurrency", type=int, default=32, help="create requests in flight"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure-1 measurement")
    parser.add_argument("--workers", default="1,2", help="figure-1 thread counts")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the operator with py-spy (on PATH) during each timed batch; slows it "
        "down, so the figures of such a run are not comparable; implies --keep",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    args.figures = {int(f) for f in args.figures.split(",") if f}
    if not args.figures <= set(FIGURES):
        parser.error(f"figures are {FIGURES}")
    args.py_spy = None
    if args.profile:
        args.py_spy = shutil.which("py-spy")
        if args.py_spy is None:
            parser.error("--profile needs py-spy on PATH (pip install py-spy, anywhere)")
        args.keep = True
    return args


def _machine() -> dict[str, Any]:
    model = ""
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    import pkcs11_issuer  # noqa: PLC0415

    versions = {"python": platform.python_version()}
    for package in ("cryptography", "python-pkcs11", "kopf", "aiohttp"):
        versions[package] = metadata.version(package)
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "versions": versions,
        # Where the operator's code came from (a PYTHONPATH may point at a work in progress).
        "operator_source": str(Path(pkcs11_issuer.__file__).parent),
    }


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _log(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    figures = args.figures
    started = datetime.datetime.now(datetime.UTC)
    paths = ["direct", "sidecar"] if 4 in figures else ["direct"]
    results: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "load_before": _load(),
        "settings": {
            "figures": sorted(figures),
            "certificates": args.certificates,
            "memory_certificates": args.memory_certificates,
            "spy_certificates": args.spy_certificates,
            "concurrency": args.concurrency,
            "create_concurrency": args.create_concurrency,
            "seconds": args.seconds,
            "workers": args.workers,
            "profiled": args.profile,
        },
    }
    machine = results["machine"]
    _log(
        f"pkcs11-issuer benchmarks, {results['date']}, {machine['host']}: {machine['cpus']} CPUs "
        f"({machine['cpu']}), {machine['memory_gib']} GiB; load {results['load_before']}"
    )
    work = sign_bench.CACHE / f"run-{started:%Y%m%d-%H%M%S}"
    failed = False
    try:
        if 1 in figures:
            _log("\n[1] signing engine: certificates/s against raw C_Sign/s, same threads")
            _log(sign_bench.HEADER)
            results["sign"] = sign_bench.measure(
                seconds=args.seconds,
                worker_counts=[int(n) for n in args.workers.split(",")],
                paths=paths,
                log=_log,
            )
        cluster_figures = figures & {2, 3, 5, 6}
        if cluster_figures:
            binaries = locate_binaries()
            settings = cluster_bench.Settings(
                certificates=args.certificates,
                memory_certificates=args.memory_certificates,
                spy_certificates=args.spy_certificates,
                concurrency=args.concurrency,
                create_concurrency=args.create_concurrency,
                figures=frozenset(figures),
                py_spy=args.py_spy,
            )
            cluster_paths = paths if cluster_figures & {2, 3, 6} else []
            if 5 in figures:
                cluster_paths = [*cluster_paths, "spy"]
            results["cluster"] = {}
            for path in cluster_paths:
                label = {"spy": "5", "sidecar": "4: 2 3 6"}.get(path, "2 3 6")
                _log(f"\n[{label}] {path}: the operator on the real control plane, "
                     f"concurrency {args.concurrency}")  # fmt: skip
                results["cluster"][path] = cluster_bench.run_path(
                    path, work / path, settings, binaries, _log
                )
    except BaseException:
        failed = True
        _log(f"\nbenchmark failed; logs are kept in {work}")
        raise
    finally:
        if args.keep:
            _log(f"work directory (logs, profiles): {work}")
        results["load_after"] = _load()
        results["seconds"] = round(
            (datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1
        )
        if not failed and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summary_rows(results)
    table = markdown_table(summary) + details(results)
    _log("\nSummary (each figure next to its ceiling from this run)\n")
    _log(table)
    write_results(results, table, args.out)
    return 0


# -- the summary ----------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def summary_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per figure and path: what was measured, its ceiling, the ratio, the target."""
    rows: list[dict[str, str]] = []

    def add(figure: str, what: str, path: str, *, measured: str, ceiling: str = "",
            ratio: str = "", target: str = "", met: bool | None = None) -> None:  # fmt: skip
        verdict = "" if met is None else ("yes" if met else "**no**")
        rows.append(
            {"#": figure, "figure": what, "path": path, "measured": measured,
             "ceiling (same run)": ceiling, "ratio": ratio, "target": target, "met": verdict}
        )  # fmt: skip

    for row in results.get("sign", []):
        add(
            "1" if row["path"] == "direct" else "4",
            f"{row['algorithm']} certificates/s, {row['workers']} worker(s)",
            row["path"],
            measured=_fmt(row["certs_per_s"]),
            ceiling=f"{_fmt(row['c_sign_per_s'])} C_Sign/s",
            ratio=f"{row['ratio']:.2f}",
            target=row.get("target", ""),
            met=row.get("met"),
        )
    for path, data in results.get("cluster", {}).items():
        figure = "4" if path == "sidecar" else "2"
        e2e = data.get("e2e")
        if e2e and "ceiling" in e2e:
            ceiling = e2e["ceiling"]
            add(
                figure,
                f"{e2e['certificates']} Certificates at once: certificates/s to Ready",
                path,
                measured=f"{e2e['certificates_per_s']:.1f} ({e2e['seconds_to_all_ready']:.1f}s)",
                ceiling=f"{ceiling['issuances_per_s']:.0f} issuances/s "
                f"({ceiling['writes_per_s']:.0f} writes/s ÷ {ceiling['writes_per_issuance']:.2f})",
                ratio=f"{e2e['ceiling_ratio']:.2f}",
                target=f">= {cluster_bench.TARGET_CERTS_PER_S:.0f}/s and "
                f">= {cluster_bench.TARGET_CEILING_RATIO:.2f}",
                met=e2e["met"],
            )
        if e2e:
            latency = e2e["latency_s"]
            add(
                figure,
                "create→Ready latency p50 / p95 / p99",
                path,
                measured=f"{latency['p50']:.2f} / {latency['p95']:.2f} / {latency['p99']:.2f} s",
            )
        memory = data.get("memory")
        if memory:
            loaded = memory["loaded_mib"]["VmRSS"]
            add(
                "3",
                f"operator RSS: idle / {memory['ready_certificates']} Ready",
                path,
                measured=f"{memory['idle_mib']['VmRSS']:.0f} / {loaded:.0f} MiB",
                ceiling=f"{cluster_bench.TARGET_RSS_MIB:.0f} MiB (target)",
                ratio=f"{loaded / cluster_bench.TARGET_RSS_MIB:.2f}",
                target=memory["target"],
                met=memory["met"],
            )
        spy = data.get("spy")
        if spy:
            add(
                "5",
                "PKCS#11 calls per issued certificate",
                "direct (spy)",
                measured=f"{spy['calls_per_certificate_total']:.1f}",
                ceiling=f"{spy['minimum_total']} (minimum)",
                ratio=f"{spy['ratio']:.2f}",
                target=spy["target"],
                met=spy["met"],
            )
        restart = data.get("restart")
        if restart:
            add(
                "6",
                f"restart with {restart['ready_certificates']} Ready: signatures / API writes",
                path,
                measured=f"{restart['signatures']} / {restart['api_writes']}",
                ceiling="0 / 0",
                target="0 / 0",
                met=restart["met"],
            )
    return rows


def details(results: dict[str, Any]) -> str:
    """Where the time goes: CPU per certificate in figure 2, and figure 5 call by call."""
    text = ""
    cluster = results.get("cluster", {})
    cpu_rows = [
        {"path": path, **{k: f"{v:.1f}" for k, v in data["e2e"]["cpu_ms_per_certificate"].items()}}
        for path, data in cluster.items()
        if "e2e" in data
    ]
    if cpu_rows:
        columns = sorted({c for row in cpu_rows for c in row} - {"path"})
        rows = [{"path": r["path"], **{c: r.get(c, "") for c in columns}} for r in cpu_rows]
        text += (
            "\n\nCPU milliseconds per certificate while figure 2 ran (n CPUs: n·1,000 ms/s):\n\n"
        )
        text += markdown_table(rows)
    spy = (cluster.get("spy") or {}).get("spy")
    if spy:
        names = sorted(set(spy["calls_per_certificate"]) | set(spy["minimum"]))
        per, minimum = spy["calls_per_certificate"], spy["minimum"]
        rows = [
            {"PKCS#11 call": name, "per certificate": f"{per.get(name, 0):g}",
             "minimum": str(minimum.get(name, 0))}
            for name in names
        ]  # fmt: skip
        text += "\n\nFigure 5 call by call:\n\n" + markdown_table(rows)
    return text


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no figures)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = [
        "| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |",
        "|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(r[c].ljust(widths[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(results: dict[str, Any], table: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = results["machine"]
    stem = f"{results['date'][:10]}-{machine['host']}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    settings = results["settings"]
    markdown = (
        f"# Benchmarks {results['date']} on {machine['host']}\n\n"
        f"{machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f".\nLoad average before {results['load_before']}, after {results['load_after']}. "
        f"Settings: {', '.join(f'{k}={v}' for k, v in settings.items())}. "
        f"Took {results['seconds']:.0f}s.\n\n{table}\n\n"
        f"Details: [{stem}.json]({stem}.json); what each figure means: "
        "[../README.md](../README.md).\n"
    )
    (out / f"{stem}.md").write_text(markdown)
    (out / "latest.md").write_text(markdown)
    _log(f"\nwrote {out / stem}.json, .md and latest.md")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
