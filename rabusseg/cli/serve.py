"""CLI verb ``serve``: the browser workbench (segment, runs, annotate) on a local address."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rabusseg.cli.app import app
from rabusseg.errors import RabussegError


@app.command()
def serve(
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", help="A checkpoint to segment with (repeat for several).")] = [],  # noqa: B006
    runs: Annotated[Path | None, typer.Option("--runs", help="A folder of training runs to browse.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="A dataset folder (or its name in $RABUSSEG_DATASETS) to annotate.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback needs the access token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
    token: Annotated[str | None, typer.Option("--token", help="Access token (generated and printed when needed and not given).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest accepted upload.")] = 64,
) -> None:
    """Serve the workbench until Ctrl-C: look at predictions, read runs, correct masks into new labels."""
    try:
        import uvicorn

        from rabusseg.app.serve.app import ServeSettings, create_app
    except ImportError as err:
        raise RabussegError(f"rabusseg serve needs its web dependencies ({err.name}): pip install 'rabusseg[serve]'") from None
    from rich.console import Console

    from rabusseg.app.serve.security import needs_token, new_token
    from rabusseg.paths import resolve_data_root

    if runs is not None and not runs.is_dir():
        raise RabussegError(f"--runs {runs}: not a folder")
    data_root = resolve_data_root(data) if data else None
    if token is None and needs_token(host):
        token = new_token()
    settings = ServeSettings(checkpoints=list(checkpoint), runs=runs, data=data_root, token=token, device=device,
                             max_upload_bytes=max_upload_mb * 2**20)  # fmt: skip
    application = create_app(settings)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    Console().print(f"rabusseg workbench on [bold]{address}[/] (Ctrl-C stops it)", highlight=False)
    uvicorn.run(application, host=host, port=port, log_level="warning")
