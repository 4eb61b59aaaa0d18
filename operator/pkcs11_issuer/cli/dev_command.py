"""`pkcs11-issuer dev cluster up|down|status`: the local control plane, started by hand.

`up` prints `export KUBECONFIG=...` on stdout (everything else goes to stderr), so
`eval "$(pkcs11-issuer dev cluster up)"` works.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pkcs11_issuer.dev.controlplane import (
    ControlPlane,
    ControlPlaneError,
    RecordedControlPlane,
    find_repo_root,
    interrupt_on_termination,
    locate_binaries,
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


def cluster_up(args: argparse.Namespace) -> int:
    try:
        workdir, kubeconfig = _paths(args)
        record = RecordedControlPlane.load(workdir)
        if record is not None:
            running = record.running()
            if len(running) == len(record.processes):
                _say(f"already running at {record.server_url}")
                print(f"export KUBECONFIG={record.kubeconfig_path}")
                return 0
            # Half a control plane (say etcd died) is worse than a fresh one.
            _say(
                f"cleaning up a broken earlier run (still running: {', '.join(running) or 'none'})"
            )
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
    except ControlPlaneError as error:
        _say(str(error))
        return 1
    except KeyboardInterrupt:
        _say("interrupted; everything started has been stopped")
        return 130
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
