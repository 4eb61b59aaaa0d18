"""Figure 1: certificates built and signed per second through SoftHSM, against raw C_Sign.

For ECDSA P-256 and RSA-2048, for 1 and 2 workers, and for each HSM path (SoftHSM loaded
directly, and through `p11-kit server` as the chart's sidecar serves it), in one run:

- ceiling: `p11bench` (/work/shared/tools/p11bench.c, compiled into .cache/bench/), C_SignInit +
  C_Sign in C with one session per thread, as many threads as workers, through the same module
  (SoftHSM, or p11-kit-client.so talking to the same `p11-kit server`);
- Token.sign: the same signatures through `pkcs11_issuer.hsm` (python-pkcs11), for reference;
- certs: `Issuer.issue_for_key(public_key, profile)` with the CA key in the HSM, as the
  operator issues for a key it generated itself: building the certificate, one HSM signature;
- via CSR: `Issuer.issue(csr, profile)`, the same after verifying a CSR's signature and policy
  (the path for CSRs that come from elsewhere, and `createca`). The CSR is made once.

Run by `bench/run.py` (figure 1); alone: .venv/bin/python bench/sign_bench.py [--seconds 5]
[--workers 1,2] [--paths direct,sidecar]. Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pkcs11_issuer.dev.p11kit import P11KitServer, p11kit_client_module
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module
from pkcs11_issuer.hsm import KeySpec, ModuleAllowlist, Pin, Token, TokenSelector
from pkcs11_issuer.x509 import (
    CertificateProfile,
    Issuer,
    Subject,
    build_csr,
    hsm_private_key,
    self_sign,
)

REPO = Path(__file__).resolve().parent.parent


def _p11bench_source() -> Path:
    """$P11BENCH_SOURCE, else the shared tool next to the checkout (../shared/tools), else the
    verbatim copy in bench/ that a clone elsewhere has."""
    if "P11BENCH_SOURCE" in os.environ:
        return Path(os.environ["P11BENCH_SOURCE"])
    shared = REPO.parent / "shared" / "tools" / "p11bench.c"
    return shared if shared.is_file() else REPO / "bench" / "p11bench.c"


P11BENCH_SOURCE = _p11bench_source()
CACHE = REPO / ".cache" / "bench"
PIN = "bench-pin"
PATHS = ("direct", "sidecar")
ALGORITHMS = {
    "ECDSA P-256": (KeySpec.of("ECDSA", 256), "ecdsa"),
    "RSA-2048": (KeySpec.of("RSA", 2048), "rsa"),
}
TARGET = ("ECDSA P-256", 2, 0.5)  # algorithm, workers, least ratio (issue 7)
LEAF = CertificateProfile(
    subject=Subject(common_name="bench.example.com"),
    dns_names=("bench.example.com",),
    usages=("digital signature", "key encipherment", "server auth"),
)
CA = CertificateProfile(
    subject=Subject(common_name="Bench CA"), is_ca=True, usages=("cert sign", "crl sign")
)


def build_p11bench() -> Path:
    """Compile p11bench into the gitignored cache, again only when its source changed."""
    binary = CACHE / "p11bench"
    if not P11BENCH_SOURCE.is_file():
        raise SystemExit(f"{P11BENCH_SOURCE} is missing: set P11BENCH_SOURCE to p11bench.c")
    if binary.exists() and binary.stat().st_mtime >= P11BENCH_SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("a C compiler is needed to build p11bench: apt-get install gcc")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(P11BENCH_SOURCE), "-ldl", "-lpthread",
         "-I/usr/include/p11-kit-1"],
        check=True,
    )  # fmt: skip
    return binary


def ceiling(
    binary: Path,
    module: str,
    *,
    token_label: str,
    key_label: str,
    kind: str,
    threads: int,
    seconds: float,
) -> float:
    result = subprocess.run(
        [str(binary), module, token_label, PIN, key_label, kind, str(threads), str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    )
    # "ecdsa threads=2 signs_per_s=15000"
    return float(result.stdout.split("signs_per_s=")[1])


def rate(work: Callable[[], object], workers: int, seconds: float) -> float:
    """Calls of `work` per second, summed over `workers` threads started together."""
    counts = [0] * workers
    start = threading.Barrier(workers + 1)
    stop = threading.Event()

    def loop(index: int) -> None:
        start.wait()
        while not stop.is_set():
            work()
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


@contextlib.contextmanager
def _module_paths(
    hsm: SoftHsm, paths: list[str], directory: Path
) -> Iterator[dict[str, tuple[str, str]]]:
    """path -> (module file, token label): SoftHSM itself, and p11-kit-client.so in front of
    a `p11-kit server` that serves another token of the same SoftHSM."""
    softhsm = softhsm_module()
    assert softhsm is not None
    modules = {"direct": (softhsm, "bench-sign-direct")}
    with contextlib.ExitStack() as stack:
        if "sidecar" in paths:
            client = p11kit_client_module()
            if client is None:
                raise SystemExit("p11-kit-client.so is missing: apt-get install p11-kit-modules")
            server = P11KitServer(
                softhsm, "pkcs11:token=bench-sign-sidecar", directory / "p11kit.sock", hsm.env()
            )
            stack.enter_context(server)
            # Before the client module is loaded, and for p11bench, which inherits it.
            os.environ["P11_KIT_SERVER_ADDRESS"] = server.address
            modules["sidecar"] = (client, "bench-sign-sidecar")
        yield {path: modules[path] for path in paths}


def measure(
    *, seconds: float, worker_counts: list[int], paths: list[str], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One row per (path, algorithm, workers); `log` gets a line per row as it is measured."""
    if softhsm_module() is None:
        raise SystemExit("SoftHSM2 is not installed: apt-get install softhsm2")
    binary = build_p11bench()
    CACHE.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    # tmpfs where there is one (see cluster_bench.token_parent); nothing timed here writes.
    shm = Path("/dev/shm")  # noqa: S108
    parent = shm if os.access(shm, os.W_OK) else CACHE
    with tempfile.TemporaryDirectory(dir=parent, prefix="pkcs11-issuer-bench-") as directory:
        hsm = SoftHsm.create(Path(directory))
        # Every token before any module is loaded: SoftHSM lists only those that exist then.
        for label in ("bench-sign-direct", "bench-sign-sidecar"):
            hsm.init_token(label, PIN)
        os.environ.update(hsm.env())  # before the module is loaded, and for p11bench
        with _module_paths(hsm, paths, Path(directory)) as modules:
            allowlist = ModuleAllowlist({path: module for path, (module, _) in modules.items()})
            for path, (module_path, token_label) in modules.items():
                token = Token(
                    allowlist.load(path),
                    TokenSelector(label=token_label),
                    Pin(PIN),
                    max_sessions=max(worker_counts) + 1,
                )
                try:
                    rows += _measure_path(
                        token,
                        ceiling=functools.partial(
                            ceiling, binary, module_path, token_label=token_label, seconds=seconds
                        ),
                        seconds=seconds,
                        worker_counts=worker_counts,
                        log=log,
                    )
                finally:
                    token.close()
    return rows


def _measure_path(
    token: Token,
    *,
    ceiling: Callable[..., float],
    seconds: float,
    worker_counts: list[int],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """`ceiling(key_label=, kind=, threads=)` runs p11bench on the same token."""
    rows = []
    path = token.module.name
    for name, (spec, kind) in ALGORITHMS.items():
        label = f"bench-ca-{kind}"
        ca_ref = token.generate_key(spec, id=label.encode(), label=label)
        leaf_ref = token.generate_key(
            spec, id=f"bench-leaf-{kind}".encode(), label=f"bench-leaf-{kind}"
        )
        ca_key = hsm_private_key(token, ca_ref)
        issuer = Issuer(self_sign(CA, ca_key), ca_key)
        csr = build_csr(LEAF, hsm_private_key(token, leaf_ref))
        issuer.issue(csr, LEAF)  # warm: sessions open, key handle cached
        for workers in worker_counts:
            c_rate = ceiling(key_label=label, kind=kind, threads=workers)
            sign = functools.partial(token.sign, ca_ref, b"x" * 32, hash_name="sha256")
            sign_rate = rate(sign, workers, seconds)
            issue = functools.partial(issuer.issue_for_key, leaf_ref.public_key, LEAF)
            cert_rate = rate(issue, workers, seconds)
            csr_rate = rate(functools.partial(issuer.issue, csr, LEAF), workers, seconds)
            ratio = cert_rate / c_rate
            row: dict[str, Any] = {
                "path": path,
                "algorithm": name,
                "workers": workers,
                "certs_per_s": round(cert_rate, 1),
                "c_sign_per_s": round(c_rate, 1),
                "ratio": round(ratio, 3),
                "token_sign_per_s": round(sign_rate, 1),
                "via_csr_per_s": round(csr_rate, 1),
                "module_locking": "its own" if token.module.thread_safe else "serialised",
            }
            if (name, workers) == TARGET[:2]:
                row["target"] = f">= {TARGET[2]:.2f}"
                row["met"] = ratio >= TARGET[2]
            rows.append(row)
            log(format_row(row))
    return rows


HEADER = (
    f"{'path':<8} {'algorithm':<12} {'workers':>7} {'certs/s':>9} {'C_Sign/s':>9} "
    f"{'ratio':>6} {'Token.sign/s':>13} {'via CSR/s':>10}  target"
)


def format_row(row: dict[str, Any]) -> str:
    target = ""
    if "target" in row:
        target = f"{row['target']} {'met' if row['met'] else 'MISSED'}"
    return (
        f"{row['path']:<8} {row['algorithm']:<12} {row['workers']:>7} {row['certs_per_s']:>9.0f} "
        f"{row['c_sign_per_s']:>9.0f} {row['ratio']:>6.2f} {row['token_sign_per_s']:>13.0f} "
        f"{row['via_csr_per_s']:>10.0f}  {target}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--workers", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--paths", default=",".join(PATHS), help="direct, sidecar or both")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.seconds:g}s per figure")
    print(HEADER)
    print("-" * len(HEADER))
    measure(
        seconds=args.seconds,
        worker_counts=[int(n) for n in args.workers.split(",")],
        paths=[p for p in args.paths.split(",") if p],
        log=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
