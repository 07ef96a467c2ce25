"""`stacklet open`: the running server's playground in the browser, signed in with a short-lived key.

The key travels in the URL fragment, which browsers never send to a server, so it reaches no log.
"""

from __future__ import annotations

import typer

from cli.output import say

KEY_TTL_S = 8 * 3600  # a working day; the page asks for a key again after that


def register(app: typer.Typer) -> None:
    app.command("open")(open_playground)


def open_playground() -> None:
    """Open the playground of the running server in the browser, signed in (an admin key valid for 8 hours)."""
    import webbrowser

    from cli.client import require_server
    from runtime.config import Settings
    from runtime.store.keys import short_lived_key

    paths = Settings.load().paths
    info = require_server(paths)
    page = f"{info.url}/playground"
    link = f"{page}#key={short_lived_key(paths, KEY_TTL_S)}"
    if webbrowser.open(link):
        say(f"Opened the playground at {page} (signed in for 8 hours).", markup=False)
    else:
        say(f"No browser found. Open this link (it signs you in for 8 hours; keep it private):\n{link}", markup=False)
