"""``finealign serve``: an OpenAI-compatible chat server over any local model."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import ModelLoadArgs, positive, setting

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _port(v) -> str | None:
    return None if 0 < v < 65536 else f"not a TCP port (--port 1-65535), got {v}"


@dataclass(kw_only=True)
class ServeConfig(ModelLoadArgs):
    """Serve MODEL at http://HOST:PORT/v1 (/v1/models, /v1/chat/completions with streaming).

    Set $FINEALIGN_SERVE_API_KEY to require `Authorization: Bearer KEY` from clients.
    """

    host: str = setting("127.0.0.1", help="Address to bind; keep loopback unless you set a key.")
    port: int = setting(8000, check=_port, help="TCP port.")
    served_name: str | None = setting(None, help="Model id clients ask for (default: the spec).")
    max_queue: int = setting(64, check=positive, help="Requests that may wait for the model; one more gets 503 "
                                                      "(queue_full) with Retry-After.")
    reward: str | None = setting(None, metavar="SPEC", help="Serve this scorer as a remote reward model "
                                 "(POST /get_reward, OpenRLHF's --remote_rm_url) instead of a chat model; --model is "
                                 "then not used. See docs/integrations.md.")
    batch_size: int = setting(32, check=positive, help="With --reward: queries scored in one batch at most (waiting "
                                                       "requests join the running one).")
    max_prompt_tokens: int = setting(4096, check=positive, help="With --reward: a longer prompt (tokens of the "
                                                                "scorer's tokenizer) gets 400.")


def run_serve(cfg: ServeConfig, quiet: bool = False) -> None:
    """Check the address, load the model, serve until SIGTERM / Ctrl-C (uvicorn's access log off with quiet)."""
    import uvicorn

    from ..serve.openai_server import create_app
    from .common import console

    _check_free(cfg.host, cfg.port)
    key = os.environ.get("FINEALIGN_SERVE_API_KEY") or None
    if cfg.host not in LOOPBACK and not key:
        console.print(f"[yellow]warning:[/] serving on {cfg.host} without an API key; anyone who can reach it can "
                      "use the model (set FINEALIGN_SERVE_API_KEY)")
    if cfg.reward:
        from ..serve.reward_server import create_reward_app

        console.print(f"loading scorer {cfg.reward} ...", highlight=False)
        app_ = create_reward_app(cfg.reward, max_queue=cfg.max_queue, batch_size=cfg.batch_size,
                                 max_prompt_tokens=cfg.max_prompt_tokens, api_key=key)
        console.print(f"serving reward {cfg.reward!r} at http://{cfg.host}:{cfg.port}/get_reward  (Ctrl-C to stop)",
                      highlight=False)
    else:
        console.print(f"loading {cfg.model} ({cfg.dtype}) ...")
        app_ = create_app(cfg.model, served_name=cfg.served_name, dtype=cfg.dtype, device=cfg.device, api_key=key,
                          max_queue=cfg.max_queue)
        name = app_.state.served.name
        console.print(f"serving {name!r} at http://{cfg.host}:{cfg.port}/v1  (Ctrl-C to stop)", highlight=False)
    config = uvicorn.Config(app_, host=cfg.host, port=cfg.port, log_level="warning" if quiet else "info",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    _server_class()(config).run()


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "serve", ServeConfig, run_serve,
                        help="Serve MODEL at http://HOST:PORT/v1 (/v1/models, /v1/chat/completions with streaming), or "
                             "with --reward SPEC a scorer as a remote reward model (POST /get_reward). "
                             "Set $FINEALIGN_SERVE_API_KEY to require `Authorization: Bearer KEY` from clients.")


GRACEFUL_SHUTDOWN_S = 3  # after SIGTERM/Ctrl-C, responses still open this long are cut


def _server_class():
    import uvicorn

    from ..serve.openai_server import close_app

    class Server(uvicorn.Server):
        """uvicorn's server; on SIGTERM/Ctrl-C it first cancels the model's queued and running requests,
        so open responses end at their next token instead of holding the shutdown."""

        def handle_exit(self, sig, frame):
            close_app(self.config.app)  # the chat server's and the reward server's apps both keep their worker here
            super().handle_exit(sig, frame)

    return Server


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
