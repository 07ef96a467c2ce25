"""Local model management: pull, list, show, rm (works with no server running)."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli import options, output
from cli.output import say
from runtime.errors import InvalidRequestError, StackletError
from runtime.spec import KINDS, model_capabilities
from runtime.store.fit import POLICIES
from runtime.store.search import PULL_PREFIXES
from runtime.store.search import TAGS as SEARCH_TAGS
from runtime.store.selection import HUBS

if TYPE_CHECKING:
    from runtime.store.registry import ModelRecord
    from runtime.store.store import Store


Kind = Enum("Kind", {name: name for name in KINDS}, type=str)  # the choices of --kind
QuantPolicy = Enum("QuantPolicy", {name: name for name in POLICIES}, type=str)  # the choices of --quant
KindOption = typer.Option(None, "--kind", help="Override the detected kind.")
FileOption = typer.Option(None, "--file", "-f", help="File name or glob in the repo (repeatable).")
QuantOption = typer.Option(None, "--quant", help="Without a :QUANT in SOURCE: fit (the largest that fits this "
                           "machine's memory; the default), smallest or largest.")

PULL_HELP = """Pull a model from Hugging Face or ModelScope, or import a local file or folder, into the store.

SOURCE is `hf.co/owner/repo:QUANT`, `modelscope.cn/owner/repo:QUANT` (or `ms://owner/repo`),
`owner/repo[:QUANT]` (from Hugging Face, or ModelScope with STACKLET_HUB=modelscope), `owner/repo
--file GLOB` (repeatable; companions such as a VAE or TAESD), or a path. Without a QUANT the pull
takes the largest quant whose weights and KV cache fit this machine's free VRAM (RAM without a GPU)
and says why; --quant smallest|largest overrides. Sharded GGUFs bring every shard, vision models
their mmproj, Piper voices their .onnx.json. Ctrl-C keeps the partial download: run the same
command again to resume. --dry-run shows the files, sizes and quant choice without downloading.

With --json, one JSON object per line, keyed by "event":

\b
  resolved    {model, source, repo|path, revision, commit, files: [{path, role, size}], total_bytes,
               choice: {quant, policy, weights, kv_cache, need, free, memory, reason} (when chosen)}
  file_start  {file, size}
  progress    {file, bytes, size}
  restarted   {file, discarded}  (the hub would not resume a partial download: it starts over)
  file_done   {file, size}
  verified    {file, sha256}
  registered  {model, kind, size, files}
  error       {message, type, code}  (then a non-zero exit)
"""


def _store() -> Store:
    from runtime.config import Settings
    from runtime.store.store import Store

    return Store(Settings.load().paths)


def pull(
    source: str = typer.Argument(..., help="owner/repo[:QUANT], hf.co/..., modelscope.cn/... or "
                                                "ms://owner/repo, or a local path."),
    name: str | None = typer.Option(None, "--name", "-n", help="Name to register (default: from the repo or file)."),
    kind: Kind | None = KindOption,
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit (default: main; "
                                                                 "master on ModelScope)."),
    files: list[str] | None = FileOption,
    token: str | None = typer.Option(None, "--token", help="Hub token for gated or private repos (default: HF_TOKEN, "
                                     "or MODELSCOPE_API_TOKEN for ModelScope).", show_default=False),
    quant: QuantPolicy | None = QuantOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the files, sizes and quant choice; download nothing."),
    as_json: options.JsonOption = False,
) -> None:
    store = _store()
    policy = quant.value if quant else None
    if dry_run:
        _dry_run(store, source, {"name": name, "revision": revision, "files": files or None, "token": token,
                                 "quant": policy}, as_json)
        return
    request: dict[str, Any] = {"name": name, "kind": kind.value if kind else None, "revision": revision,
                               "files": files or None, "token": token, "quant": policy}
    try:
        record = _pull_json(store, source, request) if as_json else _pull_with_bars(store, source, request)
    except KeyboardInterrupt:
        output.error("Interrupted. The partial download is kept: run the same command again to resume.")
        raise typer.Exit(130) from None
    if not as_json:
        output.console.print(
            f"[green]Pulled[/] [bold]{record.name}[/] ({record.kind}, {output.human_size(record.size)}). "
            f"Next: stacklet show {record.name}",
            highlight=False,
        )


def _dry_run(store: Store, source: str, request: dict[str, Any], as_json: bool) -> None:
    if Path(source).expanduser().exists():
        raise InvalidRequestError(f"{source} is a local path: --dry-run shows what a hub pull would download.")
    plan = store.plan(source, **request)
    if as_json:
        output.print_json(plan)
        return
    say(f"Would pull [bold]{plan['model']}[/] from {_hub_name(plan['source'])}/{plan['repo']} "
        f"({output.human_size(plan['total_bytes'])}):")
    output.listing(["ROLE", "FILE", "SIZE"], [[f["role"], f["path"], output.human_size(f["size"])]
                                              for f in plan["files"]])
    if plan.get("choice"):
        say(plan["choice"]["reason"], markup=False)
    say("Nothing was downloaded. Run it again without --dry-run to pull.")


def _pull_json(store: Store, source: str, request: dict[str, Any]) -> ModelRecord:
    try:
        return store.pull(source, progress=output.print_json_line, **request)
    except StackletError as exc:
        output.print_json_line({"event": "error", "message": exc.message, "type": exc.type, "code": exc.code})
        raise


def _pull_with_bars(store: Store, source: str, request: dict[str, Any]) -> ModelRecord:
    view = _PullView()
    with view.progress:
        return store.pull(source, progress=view.on_event, **request)


class _PullView:
    """Rich bars: one per file and one for the total, with speed and ETA."""

    def __init__(self) -> None:
        from rich import progress as bars

        self.progress = bars.Progress(bars.TextColumn("{task.description}"), bars.BarColumn(), bars.DownloadColumn(),
                                      bars.TransferSpeedColumn(), bars.TimeRemainingColumn(), console=output.console)
        self.total_task: Any = None
        self.file_tasks: dict[str, Any] = {}
        self.file_bytes: dict[str, int] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "resolved":
            where = f"{_hub_name(event['source'])}/{event['repo']}" if event.get("repo") else event.get("path")
            self.progress.console.print(f"Pulling [bold]{event['model']}[/] from {where}", highlight=False,
                                        soft_wrap=True)
            if event.get("choice"):
                self.progress.console.print(event["choice"]["reason"], markup=False, highlight=False, soft_wrap=True)
            if len(event["files"]) > 1:
                self.total_task = self.progress.add_task("total", total=event["total_bytes"])
        elif kind == "file_start":
            self.file_tasks[event["file"]] = self.progress.add_task(event["file"], total=event["size"])
        elif kind == "progress":
            self.file_bytes[event["file"]] = event["bytes"]
            self.progress.update(self.file_tasks[event["file"]], completed=event["bytes"])
            if self.total_task is not None:
                self.progress.update(self.total_task, completed=sum(self.file_bytes.values()))
        elif kind == "file_done":
            self.file_bytes[event["file"]] = event["size"]
            self.progress.update(self.file_tasks[event["file"]], completed=event["size"])
        elif kind == "verified":
            self.progress.console.print(f"  verified {event['file']} sha256:{event['sha256'][:16]}", highlight=False)
        elif kind == "restarted":
            self.progress.console.print(f"  {event['file']}: the hub would not resume the partial download; "
                                        f"starting over ({output.human_size(event['discarded'])} discarded)",
                                        highlight=False, soft_wrap=True)


def list_models(as_json: options.JsonOption = False) -> None:
    """List the models in the store.

    --json prints an array of model records: {name, kind, engine, size, source, files: [{role, path, size,
    sha256}], metadata, options, keep_alive, created}.
    """
    records = _store().list()
    if as_json:
        output.print_json([_public(r.to_dict()) for r in records])
        return
    if not records:
        output.console.print("No models yet. Pull one: stacklet pull owner/repo:Q4_K_M (or a local path).")
        return
    rows = [[r.name, r.kind, output.human_size(r.size), _detail(r.metadata), _where(r.source), _age(r.created)]
            for r in records]
    output.listing(["NAME", "KIND", "SIZE", "DETAIL", "SOURCE", "PULLED"], rows)


def _model_names(incomplete: str) -> list[str]:
    return [record.name for record in _store().list() if record.name.startswith(incomplete)]


NameArgument = typer.Argument(..., help="Model name.", autocompletion=_model_names)


def show(name: str = NameArgument, as_json: options.JsonOption = False) -> None:
    """Show a model: files, sizes, metadata, chat template and engine options.

    --json prints the model record: {name, kind, engine, size, source, files: [{role, path, size, sha256,
    local_path}], metadata (GGUF: architecture, parameters, quantization, context_length, embedding_length,
    pooling, head_count, head_count_kv, has_chat_template, chat_template, ...), options, keep_alive (seconds,
    negative = forever, null = the server's), created}.
    """
    store = _store()
    record = store.get(name)
    data = record.to_dict()
    for file in data["files"]:
        file["local_path"] = str(store.paths.models / file["path"])
    if as_json:
        output.print_json(data)
        return
    meta = dict(record.metadata)
    template = meta.pop("chat_template", None)
    summary = [["name", record.name], ["kind", record.kind], ["engine", record.engine],
               ["size", output.human_size(record.size)], ["source", _where(record.source)],
               ["options", _options_text(record) or "(defaults)"],
               ["capabilities", ", ".join(sorted(model_capabilities(record.kind, record.metadata)))]]
    summary += [[key, value] for key, value in meta.items() if value not in (None, "", [])]
    output.table(["", ""], summary, title=record.name)
    output.table(["ROLE", "FILE", "SIZE", "SHA256"],
                 [[f["role"], _repo_file(f["path"]), output.human_size(f["size"]), (f["sha256"] or "")[:16]]
                  for f in data["files"]])
    say(f"folder: {Path(data['files'][0]['local_path']).parent}")
    if template:
        output.console.rule("chat template")
        output.console.print(template, markup=False, highlight=False, soft_wrap=True)


def rm(name: str = NameArgument,
       yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Remove a model; frees the files no other model uses."""
    store = _store()
    store.get(name)
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidRequestError(f"Not removing '{name}' without confirmation: pass --yes.")
        typer.confirm(f"Remove {name}?", abort=True)
    _, freed = store.remove(name)
    output.console.print(f"Removed {name} (freed {output.human_size(freed)}).", highlight=False)


SET_HELP = """Store engine options and keep_alive with a model; they apply wherever it loads.

They layer between the server's (`stacklet serve` flags) and a load's (POST /v1/models/MODEL/load):
serve < model < load, and for keep_alive request > load > model > serve. A loaded model keeps the
options it was loaded with until it reloads (`stacklet ps` shows what is in effect); a new
keep_alive counts from its next request. `--unset NAME` (repeatable) clears one, e.g.
`--unset ctx_size --unset keep_alive`. With no flags, prints what is stored.

--json prints the model record, as `stacklet show --json` does.
"""


def _settable_names(incomplete: str) -> list[str]:
    from runtime.options import EngineOptions

    return [name for name in (*EngineOptions.field_names(), "keep_alive") if name.startswith(incomplete)]


UnsetOption = typer.Option(None, "--unset", metavar="NAME", help="Clear a stored option (repeatable).",
                           autocompletion=_settable_names)


def set_options(
    name: str = NameArgument,
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
    token_ids: options.TokenIdsOption = None,
    keep_alive: str | None = typer.Option(None, "--keep-alive", help="How long the model stays loaded when idle: "
                                          "seconds or 30s/5m/1h; negative = forever."),
    unset: list[str] | None = UnsetOption,
    as_json: options.JsonOption = False,
) -> None:
    patch: dict[str, Any] = options.engine_given(locals())
    if keep_alive is not None:
        patch["keep_alive"] = keep_alive
    for option in unset or []:
        option = option.replace("-", "_")
        if option in patch:
            raise InvalidRequestError(f"--unset {option} contradicts the value given for it. Pass one of them.")
        patch[option] = None
    store = _store()
    record = store.registry.configure(name, patch) if patch else store.get(name)
    if as_json:
        output.print_json(record.to_dict())
        return
    verb = "Stored with" if patch else "Options of"
    say(f"{verb} {record.name}: {_options_text(record) or 'none (server defaults)'}.")
    if patch:
        say("A loaded model keeps its current options until it reloads (see `stacklet ps`).")


def _options_text(record: ModelRecord) -> str:
    stored = record.options.as_dict()
    if record.keep_alive is not None:
        stored["keep_alive"] = "forever" if record.keep_alive < 0 else f"{record.keep_alive:g}s"
    return ", ".join(f"{k}={v}" for k, v in stored.items())


def _repo_file(path: str) -> str:
    """`models--o--r/snapshots/<commit>/sub/f.gguf` -> `sub/f.gguf`."""
    parts = Path(path).parts
    return "/".join(parts[3:]) if len(parts) > 3 and parts[1] == "snapshots" else path


def _public(data: dict[str, Any]) -> dict[str, Any]:
    data["metadata"].pop("chat_template", None)  # long; `stacklet show --json` has it
    return data


def _detail(meta: dict[str, Any]) -> str:
    parts = [meta.get("architecture") or meta.get("family"), meta.get("quantization"), meta.get("language")]
    if meta.get("context_length"):
        parts.append(f"ctx {meta['context_length']}")
    if meta.get("has_mmproj"):
        parts.append("vision")
    return " ".join(str(p) for p in parts if p)


def _where(source: dict[str, Any]) -> str:
    if source.get("type") in ("hf", "ms"):
        quant = f":{source['quant']}" if source.get("quant") else ""
        return f"{_hub_name(source['type'])}/{source.get('repo')}{quant}"
    return str(source.get("path") or source.get("type"))


def _hub_name(source_type: str) -> str:
    return "modelscope.cn" if source_type == "ms" else "hf.co"


def _age(created: int) -> str:
    seconds = max(0, int(time.time()) - created)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"


SearchKind = Enum("SearchKind", {name: name for name in SEARCH_TAGS}, type=str)  # the choices of search --kind
SearchHub = Enum("SearchHub", {name: name for name in HUBS}, type=str)  # the choices of search --hub
SearchHubOption = typer.Option(None, "--hub", help="Where to search (default: STACKLET_HUB, or the config's hub, "
                               "else huggingface).", show_default=False)
SearchKindOption = typer.Option("llm", "--kind", help="What to look for: GGUF models (llm, embedding, rerank), image, "
                                "speech (Piper) or transcription (faster-whisper).")


def search(query: str = typer.Argument(..., help="A word of the repo name, e.g. SmolLM2 or Qwen2.5."),
           kind: SearchKind = SearchKindOption,
           limit: int = typer.Option(10, "--limit", help="Most repos to look at (1 to 50; one request each)."),
           hub: SearchHub | None = SearchHubOption,
           token: str | None = typer.Option(None, "--token", help="The hub's token (default: HF_TOKEN, or "
                                            "MODELSCOPE_API_TOKEN on ModelScope).", show_default=False),
           as_json: options.JsonOption = False) -> None:
    """Search Hugging Face or ModelScope for models stacklet can pull: GGUF repos with their quants and sizes,
    or voices, transcription and image models. Most downloaded first.

    --json prints an array: {repo, downloads, format (gguf, piper, whisper, diffusion), quants: [{quant, size}],
    size (non-GGUF: the model's files), pull (what to give `stacklet pull`)}.
    """
    from runtime.config import Settings
    from runtime.store.search import search as search_hub

    settings = Settings.load()
    hub_name = hub.value if hub else settings.hub
    found = search_hub(settings.paths.models, query, kind.value, limit, token, hub=hub_name)
    if as_json:
        output.print_json(found)
        return
    if not found:
        say(f"No {kind.value} repos on {hub_name} match '{query}'. Try a shorter word or another --kind.", markup=False)
        return
    output.listing(["REPO", "FORMAT", "QUANTS / SIZE", "DOWNLOADS"],
                   [[f["repo"], f["format"], _offer(f), f["downloads"]] for f in found])
    say(f"Pull one: stacklet pull {PULL_PREFIXES[HUBS[hub_name]]}/OWNER/REPO[:QUANT] (without a quant, the largest "
        "that fits this machine).", markup=False)


def _offer(found: dict[str, Any]) -> str:
    if found["quants"]:
        return ", ".join(f"{q['quant']} {output.human_size(q['size'])}" for q in found["quants"])
    return output.human_size(found["size"])


def register(app: typer.Typer) -> None:
    app.command(help=PULL_HELP)(pull)
    app.command()(search)
    app.command("list")(list_models)
    app.command()(show)
    app.command()(rm)
    app.command("set", help=SET_HELP)(set_options)
