"""Certificates built and signed per second through SoftHSM, against the raw C_Sign ceiling.

For ECDSA P-256 and RSA-2048 and for 1 and 2 workers, in one run on one throw-away token:

- ceiling: `p11bench` (/work/shared/tools/p11bench.c, compiled into .cache/bench/), C_SignInit +
  C_Sign in C with one session per thread, as many threads as workers;
- Token.sign: the same signatures through `pkcs11_issuer.hsm` (python-pkcs11), for reference;
- certs: `Issuer.issue(csr, profile)` with the CA key in the HSM: CSR verification, building
  the certificate, one HSM signature. The CSR is made once, as a controller would receive it.

Usage: .venv/bin/python bench/sign_bench.py [--seconds 5] [--workers 1,2]
Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
P11BENCH_SOURCE = Path(os.environ.get("P11BENCH_SOURCE", REPO.parent / "shared/tools/p11bench.c"))
CACHE = REPO / ".cache" / "bench"
SOFTHSM_LABEL = "bench"
PIN = "bench-pin"
ALGORITHMS = {
    "ECDSA P-256": (KeySpec.of("ECDSA", 256), "ecdsa"),
    "RSA-2048": (KeySpec.of("RSA", 2048), "rsa"),
}
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
    binary: Path, module: str, *, key_label: str, kind: str, threads: int, seconds: float
) -> float:
    result = subprocess.run(
        [str(binary), module, SOFTHSM_LABEL, PIN, key_label, kind, str(threads), str(seconds)],
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--workers", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    module_path = softhsm_module()
    if module_path is None:
        raise SystemExit("SoftHSM2 is not installed: apt-get install softhsm2")
    binary = build_p11bench()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="softhsm-") as directory:
        hsm = SoftHsm.create(Path(directory))
        hsm.init_token(SOFTHSM_LABEL, PIN)
        os.environ.update(hsm.env())  # before the module is loaded, and for p11bench
        token = Token(
            ModuleAllowlist({"softhsm": module_path}).load("softhsm"),
            TokenSelector(label=SOFTHSM_LABEL),
            Pin(PIN),
            max_sessions=max(worker_counts) + 1,
        )
        print(f"SoftHSM {'.'.join(map(str, token.module.version))}, {os.cpu_count()} CPUs, "
              f"{args.seconds:g}s per figure, module locking: "
              f"{'its own' if token.module.thread_safe else 'serialised'}")  # fmt: skip
        header = (
            f"{'algorithm':<12} {'workers':>7} {'certs/s':>9} {'C_Sign/s':>9} {'ratio':>6} "
            f"{'Token.sign/s':>13}"
        )
        print(header)
        print("-" * len(header))
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
                c_rate = ceiling(
                    binary,
                    module_path,
                    key_label=label,
                    kind=kind,
                    threads=workers,
                    seconds=args.seconds,
                )
                sign = functools.partial(token.sign, ca_ref, b"x" * 32, hash_name="sha256")
                sign_rate = rate(sign, workers, args.seconds)
                cert_rate = rate(functools.partial(issuer.issue, csr, LEAF), workers, args.seconds)
                print(f"{name:<12} {workers:>7} {cert_rate:>9.0f} {c_rate:>9.0f} "
                      f"{cert_rate / c_rate:>6.2f} {sign_rate:>13.0f}", flush=True)  # fmt: skip
        token.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
