"""``alignpipe app``: the people's app over this project (``webapp``), and ``alignpipe app
add-user`` to name an account. Apart from ``flows.cli`` for its size; it parses and reports
like every command."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from components.environment import params_choice, state_dir
from components.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def add_app_command(command) -> None:
    """``app`` and ``app add-user`` on the CLI's parser (``command`` is ``build_parser``'s helper)."""
    app = command("app", cmd_app, "the people's app: chat with the champion or your adapter, flag and rate answers, "
                  "see who the model is aligned to, withdraw your feedback (http://127.0.0.1:8000)")
    app.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    app.add_argument("--port", type=int, default=8000)
    app.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                     help="another Host name the app answers to (repeatable; loopback names always)")
    actions = app.add_subparsers(dest="app_action", required=False)
    add = actions.add_parser("add-user", help="create an account, or set its role, owner and password")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["user", "reviewer", "admin"])
    add.add_argument("--owner", default="", help="a user's user of policies.yaml; a reviewer's deployer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first, second = getpass.getpass("password: "), getpass.getpass("again: ")
    if first != second:
        raise UserError("the two passwords differ")
    return first


def app_config(args):
    """The app's settings from the project: params, policies, database, newest dataset, secret."""
    from components.app.database import default_location
    from components.params import load_params
    from components.policy.policies import load_policies
    from webapp.state import AppConfig

    params = load_params(*params_choice(args.params, args.set))
    hosts = tuple(dict.fromkeys([*LOOPBACK, args.host, *args.allowed_host]))
    return AppConfig(params, load_policies(params.tiers.policies), default_location(),
                     Path("artifacts/dataset").resolve(), state_dir() / "app" / "session.secret", hosts)


def cmd_app(args) -> None:
    if args.app_action == "add-user":
        return add_user(args)
    import uvicorn

    from webapp.main import create_app

    config = app_config(args)
    app = create_app(config)
    print(f"alignpipe app: http://{args.host}:{args.port} (feedback database: {config.database.describe()}; "
          f"accounts: {config.params.app.users or 'add-user only'}); Ctrl-C stops", flush=True)
    if args.host not in LOOPBACK:
        print(f"alignpipe app: bound to {args.host}, reachable from other machines: put TLS in front of it", flush=True)
    # no access log: it would record people's addresses
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, server_header=False, log_level="warning")


def add_user(args: argparse.Namespace) -> None:
    from components.app.accounts import add_user as save
    from components.app.database import default_location, sessions
    from components.params import load_params
    from components.policy.policies import load_policies

    params = load_params(*params_choice(args.params, args.set))
    policies = load_policies(params.tiers.policies)
    location = default_location()
    password = _password(args.password_stdin)
    with sessions(location).begin() as db:
        account = save(db, args.name, args.role, args.owner, password, policies)
        role, owner = account.role, account.owner
    print(f"alignpipe app: account {args.name} ({role}{f', {owner}' if owner else ''}) saved in {location.describe()}")
