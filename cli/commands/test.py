"""`stacklet test ...`: smoke-test each endpoint through the official openai client."""

from __future__ import annotations

import typer

from cli.client import openai_client
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from cli.smoke import Report

test_app = typer.Typer(help="Smoke-test endpoints of stacklet (or any OpenAI-compatible server).",
                       no_args_is_help=True)


@test_app.command("models")
def test_models(base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """List the models the server serves and retrieve each one, through the official openai client."""
    report = Report("models")
    client = openai_client(base_url, api_key)
    ids: list[str] = []
    with report.check("list models") as check:
        ids = [model.id for model in client.models.list()]
        check.detail = ", ".join(ids) or "the server lists no models"
        check.extra["models"] = ids
    for model_id in ids:
        with report.check(f"retrieve {model_id}"):
            retrieved = client.models.retrieve(model_id).id
            if retrieved != model_id:
                raise AssertionError(f"asked for {model_id}, got {retrieved}")
    report.finish(as_json)


def register(app: typer.Typer) -> None:
    from cli.commands import smoke_agents, smoke_audio, smoke_images, smoke_rerank, smoke_text

    smoke_images.register(test_app)
    smoke_audio.register(test_app)
    smoke_text.register(test_app)
    smoke_rerank.register(test_app)
    smoke_agents.register(test_app)
    app.add_typer(test_app, name="test")
