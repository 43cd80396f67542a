"""``finealign serve``: an OpenAI-compatible chat server over any local model."""

from __future__ import annotations

import os

import typer

from .common import DeviceOpt, DtypeOpt, ModelOpt

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(app, **_):
    @app.command("serve")
    def serve_cmd(
        model: str = ModelOpt,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; keep loopback unless you set a key."),
        port: int = typer.Option(8000, "--port"),
        served_name: str = typer.Option(None, "--served-name", help="Model id clients ask for (default: the spec)."),
        dtype: str = DtypeOpt,
        device: str = DeviceOpt,
    ):
        """Serve MODEL at http://HOST:PORT/v1 (/v1/models, /v1/chat/completions with streaming).

        Set $FINEALIGN_SERVE_API_KEY to require `Authorization: Bearer KEY` from clients.
        """
        import uvicorn

        from ..errors import FinealignError
        from ..serve.openai_server import create_app
        from .common import console

        if not 0 < port < 65536:
            raise FinealignError(f"--port: expected 1-65535, got {port}")
        _check_free(host, port)
        key = os.environ.get("FINEALIGN_SERVE_API_KEY") or None
        if host not in LOOPBACK and not key:
            console.print(f"[yellow]warning:[/] serving on {host} without an API key; anyone who can reach it can "
                          "use the model (set FINEALIGN_SERVE_API_KEY)")
        console.print(f"loading {model} ({dtype}) ...")
        app_ = create_app(model, served_name=served_name, dtype=dtype, device=device, api_key=key)
        name = app_.state.served.name
        console.print(f"serving {name!r} at http://{host}:{port}/v1  (Ctrl-C to stop)", highlight=False)
        uvicorn.run(app_, host=host, port=port, log_level="info")


def _check_free(host: str, port: int) -> None:
    """Fail early (before loading a model) when the address cannot be bound."""
    import socket

    from ..errors import FinealignError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FinealignError(f"--host {host!r}: {e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise FinealignError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
