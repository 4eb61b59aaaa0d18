"""`pkcs11-issuer dev cluster up|down|status`: the local control plane, started by hand.

`up` prints `export KUBECONFIG=...` on stdout (everything else goes to stderr), so
`eval "$(pkcs11-issuer dev cluster up)"` works.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

from pkcs11_issuer.cli.errors import Handler, reports_errors
from pkcs11_issuer.cli.hsm_command import run_check
from pkcs11_issuer.dev.controlplane import (
    ControlPlane,
    ControlPlaneError,
    RecordedControlPlane,
    find_repo_root,
    interrupt_on_termination,
    locate_binaries,
)
from pkcs11_issuer.dev.operator import OperatorProcess
from pkcs11_issuer.dev.quickstart import (
    DEMO_NAMESPACE,
    DEV_TOKEN_LABEL,
    QUICKSTART,
    apply_quickstart,
    prepare_dev_hsm,
    start_operator,
)

# LSB's "program is not running" status code, which scripts already know how to read.
EXIT_NOT_RUNNING = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = subparsers.add_parser("dev", help="development tools (local Kubernetes control plane)")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    cluster = dev_commands.add_parser(
        "cluster",
        help="etcd + kube-apiserver + kube-controller-manager on 127.0.0.1",
        description="A real Kubernetes control plane on 127.0.0.1 (no kubelet: Pods never run).",
    )
    actions = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")

    run = dev_commands.add_parser(
        "run",
        help="the embedded default behind `make run`: SoftHSM, control plane, operator, examples",
        description="Creates (or reuses) a SoftHSM token and an operator configuration under "
        ".dev/, checks the token with `hsm check`, starts the local control plane and the "
        "operator, applies examples/softhsm/quickstart.yaml in namespace demo, and keeps it "
        "all running until Ctrl-C.",
    )
    run.add_argument(
        "--dev-dir", type=Path, help="where everything is kept (default: .dev in the checkout)"
    )
    run.set_defaults(handler=dev_run)

    up = actions.add_parser("up", help="start it (in the background unless --foreground)")
    up.add_argument(
        "--foreground", action="store_true", help="stay attached; Ctrl-C stops the control plane"
    )
    up.add_argument(
        "--no-build", action="store_true", help="fail instead of building missing binaries"
    )
    up.set_defaults(handler=cluster_up)
    down = actions.add_parser("down", help="stop the control plane started by `up`")
    down.set_defaults(handler=cluster_down)
    status = actions.add_parser(
        "status", help=f"show whether it runs (exit {EXIT_NOT_RUNNING} if not)"
    )
    status.set_defaults(handler=cluster_status)

    for parser in (up, down, status):
        parser.add_argument(
            "--workdir",
            type=Path,
            help="certificates, logs and the PID record (default: .dev/cluster in the checkout)",
        )
        parser.add_argument(
            "--kubeconfig",
            type=Path,
            help="where `up` writes the admin kubeconfig (default: .dev/kubeconfig)",
        )


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.workdir is not None and args.kubeconfig is not None:
        return args.workdir, args.kubeconfig
    dev = find_repo_root() / ".dev"
    return args.workdir or dev / "cluster", args.kubeconfig or dev / "kubeconfig"


def _say(message: str) -> None:
    print(f"pkcs11-issuer dev cluster: {message}", file=sys.stderr)


def _starts_a_control_plane(handler: Handler) -> Handler:
    """A failed or interrupted start is one message and an exit code, never a traceback."""

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ControlPlaneError as error:
            _say(str(error))
            return 1
        except KeyboardInterrupt:
            _say("interrupted; everything started has been stopped")
            return 130

    return wrapper


@_starts_a_control_plane
def cluster_up(args: argparse.Namespace) -> int:
    workdir, kubeconfig = _paths(args)
    record = RecordedControlPlane.load(workdir)
    if record is not None:
        running = record.running()
        if len(running) == len(record.processes):
            _say(f"already running at {record.server_url}")
            print(f"export KUBECONFIG={record.kubeconfig_path}")
            return 0
        # Half a control plane (say etcd died) is worse than a fresh one.
        _say(f"cleaning up a broken earlier run (still running: {', '.join(running) or 'none'})")
        record.stop()
    binaries = locate_binaries(build=not args.no_build)
    plane = ControlPlane(
        workdir, binaries, kubeconfig_path=kubeconfig, detachable=not args.foreground
    )
    with interrupt_on_termination():
        started = time.monotonic()
        plane.start()
        _say(f"ready at {plane.server_url} in {time.monotonic() - started:.1f}s")
        if args.foreground:
            return _stay_attached(plane)
        record_path = plane.detach()
    _say(f"PIDs recorded in {record_path}; `pkcs11-issuer dev cluster down` stops it")
    print(f"export KUBECONFIG={plane.kubeconfig_path}")
    return 0


def _stay_attached(plane: ControlPlane, operator: OperatorProcess | None = None) -> int:
    print(f"export KUBECONFIG={plane.kubeconfig_path}", flush=True)
    _say("running in the foreground; Ctrl-C stops it")
    try:
        while (name := plane.exited() or (operator.exited() if operator else None)) is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        plane.stop()
    tail = operator.log_tail() if operator and name == "operator" else plane.log_tail(name)
    _say(f"{name} exited unexpectedly; its log ends with:\n{tail}")
    return 1


@_starts_a_control_plane
def dev_run(args: argparse.Namespace) -> int:
    dev = args.dev_dir or find_repo_root() / ".dev"
    try:
        hsm = prepare_dev_hsm(dev)
    except (OSError, subprocess.CalledProcessError) as error:
        _say(f"cannot prepare the SoftHSM token: {error}")
        return 1
    os.environ.update(hsm.softhsm.env())  # before the module is loaded: SoftHSM reads it once
    _say(f"SoftHSM token {DEV_TOKEN_LABEL!r} in {hsm.softhsm.token_dir}; checking it")
    check = hsm.check_arguments()
    if (code := reports_errors(run_check)(check)) != 0:
        return code
    binaries = locate_binaries(build=True)
    plane = ControlPlane(
        dev / "run-cluster", binaries, kubeconfig_path=dev / "kubeconfig", detachable=False
    )
    with interrupt_on_termination():
        plane.start()
        _say(f"control plane ready at {plane.server_url}")
        operator = start_operator(plane, hsm, dev)
        _say(f"operator running (log: {operator.log_path}); applying {QUICKSTART}")
        try:
            listing = apply_quickstart(plane)
            _say("quick-start applied:\n  " + "\n  ".join(listing))
            _say(
                "try, in another shell:\n"
                f"  export KUBECONFIG={plane.kubeconfig_path}\n"
                f"  kubectl get pkcs11-issuer -A\n"
                f"  kubectl describe hsmcert web -n {DEMO_NAMESPACE}\n"
                f"  kubectl get secret web-tls -n {DEMO_NAMESPACE} -o yaml\n"
                f"  curl -s localhost:{operator.metrics_port}/metrics | grep pkcs11_issuer_\n"
                f"  SOFTHSM2_CONF={hsm.softhsm.conf_path} .venv/bin/pkcs11-issuer keys list "
                f"--config {hsm.config_path} --module softhsm "
                f"--token-uri pkcs11:token={DEV_TOKEN_LABEL} --pin-file {hsm.pin_path}"
            )
            return _stay_attached(plane, operator)
        finally:
            operator.stop()


def cluster_down(args: argparse.Namespace) -> int:
    try:
        workdir, _kubeconfig = _paths(args)
        record = RecordedControlPlane.load(workdir)
        if record is None:
            _say(f"nothing recorded in {workdir}; not running")
            return 0
        stopped = record.stop()
    except ControlPlaneError as error:
        _say(str(error))
        return 1
    _say(f"stopped {', '.join(stopped)}" if stopped else "was not running; record removed")
    return 0


def cluster_status(args: argparse.Namespace) -> int:
    try:
        workdir, _kubeconfig = _paths(args)
    except ControlPlaneError as error:
        _say(str(error))
        return 1
    record = RecordedControlPlane.load(workdir)
    if record is None:
        print("not running")
        return EXIT_NOT_RUNNING
    running = set(record.running())
    for name, pid, _executable in record.processes:
        print(f"{name:<24} pid {pid:<8} {'running' if name in running else 'not running'}")
    print(f"server      {record.server_url}")
    print(f"kubeconfig  {record.kubeconfig_path}")
    return 0 if len(running) == len(record.processes) else EXIT_NOT_RUNNING
