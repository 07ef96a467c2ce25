"""The server's lifecycle: serve (foreground or -d), status, stop, logs, ps."""

from __future__ import annotations

import time
from typing import Any

import typer

from cli import options, output
from cli.output import say

HEALTH_TIMEOUT_S = 120.0  # first start-up imports the web stack and opens the database
STOP_TIMEOUT_S = 30.0  # the server lets requests finish and stops every worker first
LOG_FILE = "server.log"


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(status)
    app.command()(stop)
    app.command()(logs)
    app.command()(ps)


def serve(
    host: str | None = typer.Option(None, "--host", help="Address to bind. Default: STACKLET_HOST, the config "
                                    "file's host, else 127.0.0.1."),
    port: int | None = typer.Option(None, "--port", help="Port to bind. Default: STACKLET_PORT, the config "
                                    "file's port, else 8080."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background (logs: `stacklet logs`)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Accept requests without an API key (loopback only)."),
    keep_alive: str | None = typer.Option(None, "--keep-alive", help="How long an idle model stays loaded: seconds or "
                                   "30s/5m/1h; negative = forever. Default 5m."),
    max_loaded_models: int | None = typer.Option(None, "--max-loaded-models", help="Most models loaded at once (0 = no "
                                          "limit beyond memory)."),
    memory_budget: str | None = typer.Option(None, "--memory-budget", help="Memory for loaded models, e.g. 12G "
                                      "(default: 80% of RAM, plus VRAM when offloading)."),
    n_gpu_layers: options.NGpuLayersOption = None,
    main_gpu: options.MainGpuOption = None,
    tensor_split: options.TensorSplitOption = None,
    split_mode: options.SplitModeOption = None,
    flash_attn: options.FlashAttnOption = None,
    ctx_size: options.CtxSizeOption = None,
    parallel: options.ParallelOption = None,
    kv_slots: options.KvSlotsOption = False,
    cache_type_k: options.CacheTypeKOption = None,
    cache_type_v: options.CacheTypeVOption = None,
    threads: options.ThreadsOption = None,
    no_mmap: options.NoMmapOption = False,
    vae_tiling: options.VaeTilingOption = False,
    clip_on_cpu: options.ClipOnCpuOption = False,
    vae_on_cpu: options.VaeOnCpuOption = False,
) -> None:
    """Serve every local model through the OpenAI-compatible API (foreground unless -d)."""
    from runtime.options import parse_keep_alive

    engine = options.engine_given(locals())
    overrides: dict[str, Any] = {
        "host": host, "port": port, "auth": False if no_auth else None,
        "keep_alive": None if keep_alive is None else parse_keep_alive(keep_alive),
        "max_loaded_models": max_loaded_models,
        "memory_budget": None if memory_budget is None else parse_size(memory_budget),
        "engine": engine,
    }
    if detach:
        start_background(overrides)
    else:
        run_foreground(overrides)


def status(as_json: options.JsonOption = False) -> None:
    """Whether the background server runs, where, and since when (exit 7 when it does not)."""
    from cli.client import NOT_RUNNING

    report = server_status()
    if as_json:
        output.print_json(report)
    elif report["running"]:
        health = "healthy" if report["healthy"] else "[red]not answering[/]"
        say(f"stacklet server at {report['url']} (pid {report['pid']}), {health}, up "
            f"{duration(report['uptime_s'])}, {report.get('models_loaded', 0)} model(s) loaded")
    else:
        say(NOT_RUNNING)
    if not report["running"]:
        raise typer.Exit(7)


def stop() -> None:
    """Stop the background server and every model worker it started."""
    say(stop_server(STOP_TIMEOUT_S))


def logs(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until Ctrl-C."),
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to print."),
) -> None:
    """Print the background server's log."""
    print_log(lines, follow)


def ps(as_json: options.JsonOption = False) -> None:
    """Loaded models: worker pid, memory, queue, active requests, compute threads (text models: the cores other
    processes leave free, unless --threads fixed them), time until unload, options in effect;
    and remote targets: health, latency, in-flight requests, models (in --json, entries with type "remote").

    The options are the ones the worker was loaded with; options stored since (`stacklet set`) apply
    when the model reloads.
    """
    from cli.commands.routes import live_remotes, remote_row

    workers = loaded_models()
    remotes = live_remotes() or []
    if as_json:
        output.print_json(workers + [{"type": "remote", **remote} for remote in remotes])
        return
    if remotes:
        output.listing(["remote", "url", "health", "latency", "in flight", "models"], [remote_row(r) for r in remotes])
    if not workers:
        say("No models are loaded. A model loads on its first request.")
        return
    now = time.time()
    rows = [
        [w["model"], w["state"], w["pid"], output.human_size(w.get("rss") or w.get("memory")),
         w.get("queue_depth", 0), f"{w.get('active', 0)}/{w.get('parallel', 1)}",
         w.get("engine", {}).get("threads", ""), _kv_use(w), _unloads_in(w, now),
         " ".join(f"{k}={v}" for k, v in sorted(w.get("options", {}).items()))]
        for w in workers
    ]
    output.listing(["model", "state", "pid", "memory", "queue", "active", "threads", "kv cache", "unloads in",
                    "options"], rows)


def _kv_use(worker: dict[str, Any]) -> str:
    """KV cache cells in use, for text models (the batching engine reports them)."""
    engine = worker.get("engine", {})
    if not engine.get("kv_cells_total"):
        return ""
    return f"{engine['kv_cells_used'] * 100 // engine['kv_cells_total']}% of {engine['kv_cells_total']}"


# The background process


def parse_size(text: str) -> int:
    """Bytes from "12G", "512M", "1.5GiB" or a plain byte count (binary units)."""
    import re

    from runtime.errors import InvalidRequestError

    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if not match:
        raise InvalidRequestError(f"Invalid size '{text}'. Use a byte count or a size such as 512M or 12G.")
    return int(float(match[1]) * 1024 ** "_kmgt".index(match[2] or "_"))


def server_args(overrides: dict[str, Any]) -> list[str]:
    """The settings as `python -m runtime` flags."""
    args: list[str] = []
    for name, value in overrides.items():
        if name == "engine":
            for option, setting in value.items():
                args += [f"--{option.replace('_', '-')}", str(setting).lower() if setting is True else str(setting)]
        elif name == "auth":
            args += ["--no-auth"] if value is False else []
        elif value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def run_foreground(overrides: dict[str, Any]) -> None:
    import runtime.__main__ as server_main
    from runtime.config import Settings
    from runtime.server import state

    settings = Settings.load(overrides)
    paths = settings.paths.ensure()
    state.refuse_second_server(paths)
    check_port_free(settings.host, settings.port)
    say(playground_line(state.ServerInfo(0, settings.host, settings.port, 0).url).strip(), markup=False)
    raise typer.Exit(server_main.main(server_args(overrides)))


def start_background(overrides: dict[str, Any]) -> None:
    import subprocess
    import sys

    from runtime.config import Settings, open_private
    from runtime.server import state

    settings = Settings.load(overrides)
    paths = settings.paths.ensure()
    running = state.running(paths)
    if running is not None:
        say(f"A stacklet server is already running at {running.url} (pid {running.pid}).")
        return
    check_port_free(settings.host, settings.port)
    log_path = paths.logs / LOG_FILE
    with open_private(log_path) as log:
        start = log.tell()
        process = subprocess.Popen([sys.executable, "-m", "runtime", *server_args(overrides)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = state.ServerInfo(process.pid, settings.host, settings.port, time.time()).url
    _wait_healthy(process, url, log_path, start)  # the server publishes its own state record
    _print_ready(url, settings.auth)


def check_port_free(host: str, port: int) -> None:
    import errno
    import socket

    from runtime.errors import ConfigError, ConflictError

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ConfigError(f"Cannot resolve --host {host}. Use an IP address such as 127.0.0.1.") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConflictError(f"Port {port} on {host} is already in use. Choose another with --port, "
                                    "or stop what is using it.") from None
            raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None


def _wait_healthy(process: Any, url: str, log_path: Any, log_start: int) -> None:
    import httpx

    from runtime.errors import StackletError

    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.terminate()
            raise StackletError(f"The server did not answer within {HEALTH_TIMEOUT_S:.0f}s. See `stacklet logs`.")
        time.sleep(0.2)
    raise StackletError(f"The server exited during start-up: {_start_failure(log_path, log_start)} "
                        "See `stacklet logs`.")


def _start_failure(log_path: Any, log_start: int) -> str:
    with log_path.open("rb") as log:
        log.seek(log_start)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return (errors or lines or ["no output."])[-1]


def _print_ready(url: str, auth: bool) -> None:
    header = ' -H "Authorization: Bearer $STACKLET_API_KEY"' if auth else ""
    lines = [f"stacklet server running at {url}", f"  OpenAI base URL: {url}/v1",
             f"  Try it: curl {url}/v1-openai/models{header}", playground_line(url)]
    if auth:
        lines.append("  (create a key with `stacklet keys create`)")
    lines.append("  Logs: `stacklet logs -f`   Loaded models: `stacklet ps`   Stop: `stacklet stop`")
    say("\n".join(lines), markup=False)


def playground_line(url: str) -> str:
    return f"  Playground: {url}/playground (`stacklet open` opens it signed in)"


def server_status() -> dict[str, Any]:
    import httpx

    from runtime.config import Settings
    from runtime.server import state

    paths = Settings.load().paths
    info = state.running(paths)
    if info is None:
        return {"running": False}
    report: dict[str, Any] = {"running": True, "pid": info.pid, "url": info.url, "base_url": f"{info.url}/v1",
                              "started": info.started, "uptime_s": time.time() - info.started,
                              "log": str(paths.logs / LOG_FILE)}
    try:
        health = httpx.get(f"{info.url}/health", timeout=5).json()
        report.update(healthy=True, version=health.get("version"), models_loaded=health.get("models_loaded"))
    except (httpx.HTTPError, ValueError):
        report["healthy"] = False
    return report


def stop_server(timeout: float) -> str:
    import os
    import signal

    from runtime.config import Settings
    from runtime.server import state

    paths = Settings.load().paths
    info = state.read(paths)
    if info is None:
        return "No stacklet server is running."
    if not info.is_running():
        state.retract(paths, info.pid)
        return f"No stacklet server is running (removed the stale record of pid {info.pid})."
    _signal(info.pid, signal.SIGTERM)
    if not _wait_gone(info, timeout):
        # Its workers share its process group when `serve -d` started it; take them down together.
        try:
            group = os.getpgid(info.pid) == info.pid
        except ProcessLookupError:
            group = False
        _signal(info.pid, signal.SIGKILL, group=group)
        _wait_gone(info, timeout)
    state.retract(paths, info.pid)
    return f"Stopped the stacklet server (pid {info.pid})."


def _signal(pid: int, signum: int, group: bool = False) -> None:
    import contextlib
    import os

    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _wait_gone(info: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while info.is_running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def print_log(lines: int, follow: bool) -> None:
    import sys
    from collections import deque

    from runtime.config import Settings
    from runtime.errors import NotFoundError

    path = Settings.load().paths.logs / LOG_FILE
    if not path.is_file():
        raise NotFoundError(f"No server log at {path} yet. Start the server with `stacklet serve -d`.")
    with path.open("rb") as log:
        for line in deque(log, maxlen=lines) if lines > 0 else ():
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        try:
            while follow:
                chunk = log.read()
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.25)
        except KeyboardInterrupt:
            pass


def loaded_models() -> list[dict[str, Any]]:
    from cli.client import ServerClient
    from runtime.config import Settings

    with ServerClient(Settings.load().paths) as client:
        models = client.get("/v1/models")["data"]
    return [{**model["worker"], "model": model["id"]} for model in models if model.get("worker")]


def _unloads_in(worker: dict[str, Any], now: float) -> str:
    if worker.get("state") != "ready":
        return "-"
    expires_at = worker.get("expires_at")
    return "never" if expires_at is None else duration(max(0.0, expires_at - now))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"
