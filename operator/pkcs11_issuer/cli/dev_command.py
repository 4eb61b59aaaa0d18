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
from pkcs11_issuer.dev.quickstart import DEV_TOKEN_LABEL, prepare_dev_hsm

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
        help="the embedded default behind `make run`: SoftHSM token, hsm check, control plane",
        description="Creates (or reuses) a SoftHSM token and an operator configuration under "
        ".dev/, checks the token with `hsm check`, and runs the local control plane until "
        "Ctrl-C.",
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


def _stay_attached(plane: ControlPlane) -> int:
    print(f"export KUBECONFIG={plane.kubeconfig_path}", flush=True)
    _say("running in the foreground; Ctrl-C stops it")
    try:
        while (name := plane.exited()) is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        plane.stop()
    _say(f"{name} exited unexpectedly; its log ends with:\n{plane.log_tail(name)}")
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
        hsm_flags = (
            f"--config {check.config} --module {check.module} "
            f"--token-uri {check.token_uri} --pin-file {check.pin_file}"
        )
        _say(
            "try, in another shell:\n"
            f"  export KUBECONFIG={plane.kubeconfig_path}\n"
            f"  export SOFTHSM2_CONF={hsm.softhsm.conf_path}\n"
            "  kubectl get namespaces\n"
            f"  .venv/bin/pkcs11-issuer keys list {hsm_flags}\n"
            f"  .venv/bin/pkcs11-issuer createca {hsm_flags} --generate "
            "--key-uri 'pkcs11:object=dev-root;id=%01' --common-name 'dev root' --out root.pem"
        )
        return _stay_attached(plane)


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
