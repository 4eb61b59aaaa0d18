"""`pkcs11-issuer run`: the operator itself."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from pkcs11_issuer.cli.errors import reports_errors
from pkcs11_issuer.config import OperatorConfig

LOG_FORMATS = {"json": kopf.LogFormat.JSON, "text": kopf.LogFormat.FULL}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the operator",
        description="Watches Issuers, ClusterIssuers and Certificates in every namespace and "
        "issues certificates whose keys stay in the HSM. Credentials: the Pod's ServiceAccount, "
        "else KUBECONFIG.",
    )
    run.add_argument(
        "--config",
        required=True,
        help="the operator configuration file (modules, tokens, grants; see docs/operator.md)",
    )
    run.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="json")
    run.add_argument("--verbose", action="store_true", help="log every reconcile step")
    run.set_defaults(handler=reports_errors(run_operator))


def run_operator(args: argparse.Namespace) -> int:
    config = OperatorConfig.load(args.config)
    kopf.configure(verbose=args.verbose, log_format=LOG_FORMATS[args.log_format])
    if not args.verbose:
        # kopf reports every watch event it hands over; the controller logs what it does.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Imported late: the controller pulls in kopf's machinery, which other commands never need.
    from pkcs11_issuer.controller.leader import LeadershipLost  # noqa: PLC0415
    from pkcs11_issuer.controller.runtime import operate  # noqa: PLC0415

    try:
        asyncio.run(operate(config))
    except LeadershipLost as lost:
        # Exiting is the safe way out: the Pod restarts as a standby with fresh state.
        logging.getLogger("pkcs11_issuer").error("%s", lost)
        return 1
    return 0
