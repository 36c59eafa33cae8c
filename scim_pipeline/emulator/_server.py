"""The emulator served by uvicorn on loopback, in a background thread."""

from __future__ import annotations

import ipaddress
import threading
import time
from types import TracebackType

import uvicorn

from ._app import SCIM_PREFIX, TOKEN_PATH, Emulator, EmulatorApp
from ._config import EmulatorConfig

_START_TIMEOUT_S = 10.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmulatorServer:
    """A running emulator: ``with EmulatorServer(config) as server: server.base_url``.

    Binds ``127.0.0.1`` on an ephemeral port unless told otherwise; a non-loopback host needs
    ``allow_remote=True`` because this is a test server with published demo credentials.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(f"refusing to serve the emulator on non-loopback host {host!r}")
        self.config = config or EmulatorConfig()
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._emulator: Emulator | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def emulator(self) -> Emulator:
        if self._emulator is None:
            raise RuntimeError("the emulator server is not started")
        return self._emulator

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator server is not started")
        return self._port

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + SCIM_PREFIX

    @property
    def token_url(self) -> str:
        return self.origin + TOKEN_PATH

    def start(self) -> EmulatorServer:
        if self._server is not None:
            raise RuntimeError("the emulator server is already started")
        self._emulator = Emulator(self.config)
        uvicorn_config = uvicorn.Config(
            EmulatorApp(self._emulator),
            host=self.host,
            port=self._requested_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(uvicorn_config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name="scim-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator could not listen on {self.host}:{self._requested_port}")
            time.sleep(0.005)
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._emulator is not None:
            self._emulator.close()
        self._server = None
        self._thread = None

    def wait(self) -> None:
        """Block until the server stops (for the command line)."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
