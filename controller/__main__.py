"""Command line: ``python -m controller check-config FILE`` and ``python -m controller run``.

``run`` needs no Kubernetes: it is how Swarm-only deployments run.  Under
Kubernetes the program is started with ``kopf run controller/main.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from controller.config import Config, ConfigError

EXIT_CONFIG = 2
EXIT_START = 1


def _describe(config: Config) -> str:
    from controller.instance import Identity
    from extensions import KNOWN_EXTENSIONS

    lines = [f"instance: {Identity(configured=config.core.instance_id).describe()}", "rules:"]
    lines += [f"  {line}" for line in config.core.rules.describe()]
    lines.append("workflow:")
    for index, step in enumerate(config.core.workflow_steps, 1):
        spec = KNOWN_EXTENSIONS[step]
        lines.append(f"  {index}. {step} ({spec.kind}, config section {spec.section})")
        # An extension whose settings decide who gets what (pools) shows them.
        describe = getattr(config.extensions.get(step), "describe", None)
        if callable(describe):
            lines += [f"       {line}" for line in describe()]
    return "\n".join(lines)


def _read_or_report(path: str | None) -> Config | None:
    """The config, or None after printing every problem with its key path."""
    from controller.app import read_config

    try:
        return read_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return None


def check_config(path: str) -> int:
    config = _read_or_report(path)
    if config is None:
        return EXIT_CONFIG
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK")
    print(_describe(config))
    return 0


async def _run(path: str | None) -> int:
    from controller.app import build_app, setup_logging
    from controller.extension import ExtensionStartError

    config = _read_or_report(path)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config.core.log_level, config.core.log_file)
    app = build_app(config)
    try:
        await app.start()
    except ExtensionStartError as exc:
        logging.getLogger("interlook").error("start-up failed: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("interlook").info("interlook running: instance %s, workflow %s", app.identity.instance_id,
                                        ",".join(config.core.workflow_steps))
    await stop.wait()
    await app.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interlook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate a config file without connecting anywhere")
    check.add_argument("file")
    run = sub.add_parser("run", help="run the core and its extensions (no Kubernetes needed)")
    run.add_argument("--config", default=None, help="config file (default: $INTERLOOK_CONFIG or config.yml)")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    return asyncio.run(_run(args.config))


if __name__ == "__main__":
    sys.exit(main())
