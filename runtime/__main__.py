"""`python -m runtime [--host H] [--port P] [--no-auth] [--n-gpu-layers all] ...`: the server in the foreground.

Every setting and engine option is a flag (strings, coerced by Settings.load), so `stacklet serve`
can pass through exactly what the user typed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from runtime.config import Settings
from runtime.errors import StackletError
from runtime.http.logs import setup_logging
from runtime.options import EngineOptions

ENGINE_PREFIX = "engine."


def parse_args(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m runtime", description="Run the stacklet server.")
    for field in fields(Settings):
        if field.name not in ("engine", "paths"):
            parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, metavar="VALUE")
    parser.add_argument("--no-auth", dest="auth", action="store_const", const="false",
                        help="Accept requests without a key (loopback only).")
    for name in EngineOptions.field_names():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=ENGINE_PREFIX + name, metavar="VALUE")
    values = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    engine = {k.removeprefix(ENGINE_PREFIX): values.pop(k) for k in list(values) if k.startswith(ENGINE_PREFIX)}
    if engine:
        values["engine"] = engine
    return values


def main(argv: list[str] | None = None) -> int:
    setup_logging("%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from runtime.server.app import run

        run(Settings.load(parse_args(sys.argv[1:] if argv is None else argv)))
    except StackletError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
