"""`python -m runtime.worker --spec-json SPEC --socket PATH`: serve one model on a Unix socket.

The scheduler starts this process. It is ready once GET /status answers on the socket. A load
failure exits non-zero with `error: <message>` as the last line on stderr, which the scheduler
shows to the client. The worker exits by itself when its parent (the server) dies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runtime.errors import StackletError
from runtime.http.logs import setup_logging
from runtime.spec import ModelSpec

LOAD_FAILED_EXIT = 3
PARENT_POLL_S = 0.5
GRACEFUL_SHUTDOWN_S = 3

log = logging.getLogger("stacklet.worker")


def read_spec(value: str) -> ModelSpec:
    """The spec as inline JSON or as the path of a JSON file."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text()
    return ModelSpec.from_json(json.loads(text))


def watch_parent(parent_pid: int) -> None:
    """Exit as soon as the server that started us is gone, so no worker outlives it."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def load(spec: ModelSpec) -> Any:
    from runtime.engines import load_engine

    try:
        return load_engine(spec)
    except StackletError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
    except Exception:
        log.exception("loading %s failed", spec.name)
        print(f"error: The model '{spec.name}' could not be loaded; see the server log.", file=sys.stderr,
              flush=True)
    sys.exit(LOAD_FAILED_EXIT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.worker")
    parser.add_argument("--spec-json", required=True, help="ModelSpec as JSON, or a file holding it")
    parser.add_argument("--socket", required=True, help="Unix socket path to serve on")
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    setup_logging("%(levelname)s %(name)s: %(message)s")
    watch_parent(args.parent_pid)
    spec = read_spec(args.spec_json)
    engine = load(spec)

    import uvicorn

    from runtime.worker.app import create_worker_app

    uvicorn.run(create_worker_app(engine, spec, Path(args.socket)), uds=args.socket, log_level="warning",
                log_config=None, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


if __name__ == "__main__":
    main()
