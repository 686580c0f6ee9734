"""The `c3` command.

  c3 serve   API + workers on one machine (the embedded default, or Redis when configured)
  c3 api     the API alone (production form)
  c3 worker  one Celery worker (production form: one per GPU)
  c3 keys    create or revoke API keys
  c3 invert, c3 demo   the inversion engine offline (models.cli)
  c3 check   what an upload of an ONNX file would meet (models.cli)

Options become `C3_*` environment variables, so that settings (and the worker processes that
`serve` starts) all see one configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from service.settings import ServiceSettings, get_settings

ENGINE_COMMANDS = ("invert", "demo", "check")


def _apply(args: argparse.Namespace, **names: str) -> ServiceSettings:
    for attr, env in names.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[env] = str(value)
    get_settings.cache_clear()
    return get_settings()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c3", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="API and workers on this machine")
    api = sub.add_parser("api", help="the API alone")
    for p in (serve, api):
        p.add_argument("--host", help="bind address (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port (default 8000)")
        p.add_argument("--data-dir", help="embedded default's data folder (default ./data)")
    serve.add_argument("--workers", type=int, default=1, help="inversion workers (default 1)")

    worker = sub.add_parser("worker", help="one Celery worker")
    worker.add_argument("--queues", default="gpu,validate", help="queues to consume")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    worker.add_argument("--name", help="Celery node name")
    worker.add_argument("--data-dir", help="embedded default's data folder")

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key for a tenant (printed once)")
    create.add_argument("--tenant", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key")
    for p in (create, revoke):
        p.add_argument("--data-dir", help="embedded default's data folder")

    for name in ENGINE_COMMANDS:
        sub.add_parser(name, help=f"offline inversion engine (see c3 {name} --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ENGINE_COMMANDS:
        from models.cli import main as engine_main  # torch only for these commands

        return engine_main(argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    from service.auth import KEYS, create_key, hash_key
    from service.storage import open_stores

    stores = open_stores(settings)
    try:
        if args.keys_command == "create":
            try:
                print(create_key(stores.jobs, args.tenant))
            except ValueError as exc:
                print(f"c3 keys create: {exc}", file=sys.stderr)
                return 2
        else:
            stores.jobs.delete_key(KEYS, hash_key(args.key))
            print("revoked")
        return 0
    finally:
        stores.close()


if __name__ == "__main__":
    sys.exit(main())
