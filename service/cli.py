"""c3: audit image classifiers with Confidently Classified Counterfeits.

C3 trains a generator against a classifier until it makes images the classifier labels with
near-certainty although they look nothing like its data (network inversion), and reports how
far its confidence can be trusted. Run the service (`c3 serve`), audit a model file against it
(`c3 audit`), or run the engine offline (`c3 invert`, `c3 demo`, `c3 check`).

Options of serve, api, worker and keys become `C3_*` environment variables, so that settings
(and the worker processes `serve` starts) all see one configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from service.settings import ServiceSettings, get_settings

ENGINE_COMMANDS = {
    "invert": "generate counterfeits for a model file, offline (no service)",
    "demo": "train a CNN on scikit-learn's digits and compare the methods, offline",
    "check": "what an upload of an ONNX file would meet, offline",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; every option with a default says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS)
        if shown and action.option_strings and "%(default)" not in text and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _apply(args: argparse.Namespace, **names: str) -> ServiceSettings:
    for attr, env in names.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[env] = str(value)
    get_settings.cache_clear()
    return get_settings()


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=summary, description=description, epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from service import audit_cli

    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="c3", description=doc.split("\n\nOptions")[0], formatter_class=HelpFormatter,
        epilog="examples:\n  c3 serve --data-dir data\n  c3 audit model.onnx --input-shape "
        "1,28,28 --class-names 0,1,2,3,4,5,6,7,8,9\n\nEach command has its own --help.",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(
        sub, "serve", "the API and its workers on this machine",
        "Run the API and N inversion workers (plus one validation worker) on this machine; "
        "Ctrl-C stops them all. Without C3_REDIS_URL, all state lives in --data-dir (SQLite "
        "and files); running jobs resume from their checkpoints on the next start.",
        "c3 serve --port 8000 --data-dir data --workers 2",
    )  # fmt: skip
    api = _command(
        sub, "api", "the API alone (production form)",
        "Run the API alone; workers run beside it as `c3 worker` (production form).",
        "C3_REDIS_URL=redis://redis:6379/0 c3 api --host 0.0.0.0",
    )  # fmt: skip
    for p in (serve, api):
        p.add_argument("--host", help="bind address (default: 127.0.0.1, C3_HOST)")
        p.add_argument("--port", type=int, help="port (default: 8000, C3_PORT)")
        p.add_argument("--data-dir", help="the embedded default's data folder (default: ./data)")
    serve.add_argument("--workers", type=int, default=1, help="inversion workers")

    worker = _command(
        sub, "worker", "one Celery worker (production form)",
        "Run one Celery worker process: inversion jobs (queue `gpu`), upload validations "
        "(queue `validate`), or both.",
        "c3 worker --queues gpu --name gpu0@%h",
    )  # fmt: skip
    worker.add_argument("--queues", default="gpu,validate", help="queues to consume")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once")
    worker.add_argument("--name", help="Celery node name (default: Celery's)")
    worker.add_argument("--data-dir", help="the embedded default's data folder (default: ./data)")

    keys = _command(
        sub, "keys", "make, list or revoke API keys",
        "API keys: each belongs to a tenant, whose classifiers, datasets and jobs only its "
        "keys see. The service keeps only a hash of each key.",
        "c3 keys create --tenant my-team",
    )  # fmt: skip
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = _command(
        keys_sub, "create", "make a key for a tenant (printed once)",
        "Make an API key for a tenant; the key is printed once and cannot be shown again.",
        "c3 keys create --tenant my-team",
    )  # fmt: skip
    create.add_argument("--tenant", required=True, help="letters, digits, '-' or '_'")
    listing = _command(
        keys_sub, "list", "list the keys (id, tenant, creation time)",
        "List the API keys by id (the start of the key's hash; the secret is never stored), "
        "tenant and creation time.",
        "c3 keys list --json",
    )  # fmt: skip
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = _command(
        keys_sub, "revoke", "revoke a key",
        "Revoke an API key, given as the key itself or as its id from `c3 keys list`. A key "
        "that does not exist is an error (exit status 1).",
        "c3 keys revoke 3f9a1c0b2e4d",
    )  # fmt: skip
    revoke.add_argument("key", help="the key (c3k_...) or its id")
    for p in (create, listing, revoke):
        p.add_argument("--data-dir", help="the embedded default's data folder (default: ./data)")

    audit_cli.add_parser(sub, HelpFormatter)
    for name, summary in ENGINE_COMMANDS.items():
        sub.add_parser(name, help=f"{summary} (c3 {name} --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ENGINE_COMMANDS:
        from models.cli import main as engine_main  # torch only for these commands

        return engine_main(argv)
    args = _parser().parse_args(argv)
    if args.command == "audit":  # the client's own output: no log lines
        from service import audit_cli

        return audit_cli.run(args)
    from service import logs
    from service.settings import CommonSettings

    logs.configure(CommonSettings().log_format)
    if args.command in ("serve", "api"):
        settings = _apply(args, host="C3_HOST", port="C3_PORT", data_dir="C3_DATA_DIR")
        from service.serve import run_api, serve

        return (
            serve(settings, workers=args.workers) if args.command == "serve" else run_api(settings)
        )
    if args.command == "worker":
        _apply(args, data_dir="C3_DATA_DIR")
        from worker.app import run_worker

        run_worker(args.queues, args.concurrency, args.name)
        return 0
    if args.command == "keys":
        return _keys(args, _apply(args, data_dir="C3_DATA_DIR"))
    raise AssertionError(args.command)


def _keys(args: argparse.Namespace, settings: ServiceSettings) -> int:
    from service.auth import create_key, key_infos, revoke_key
    from service.storage import open_stores

    stores = open_stores(settings)
    try:
        if args.keys_command == "create":
            try:
                print(create_key(stores.jobs, args.tenant))
            except ValueError as exc:
                print(f"c3 keys create: {exc}", file=sys.stderr)
                return 2
        elif args.keys_command == "list":
            infos = key_infos(stores.jobs)
            if args.json:
                print(json.dumps([info._asdict() for info in infos], indent=2))
            for info in [] if args.json else infos:
                created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created_at))
                print(f"{info.id}  {info.tenant:<24} {created}")
        else:
            revoked = revoke_key(stores.jobs, args.key)
            if revoked is None:
                print(f"c3 keys revoke: no such key: {args.key}", file=sys.stderr)
                return 1
            print(f"revoked key {revoked.id} of tenant {revoked.tenant}")
        return 0
    finally:
        stores.close()


if __name__ == "__main__":
    sys.exit(main())
