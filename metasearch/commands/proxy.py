"""``metasearch storage-proxy``: Optuna's gRPC storage proxy in front of a study database.

Hundreds of workers on one database each hold a pool of connections and poll it; through the
proxy they hold one gRPC channel each (``--storage grpc://host:port``), and the proxy alone
talks to the database, with Optuna's cache of finished trials in front of it.
"""

from __future__ import annotations

import warnings

import optuna
from rich.console import Console

from metasearch.errors import StorageError
from metasearch.search.storage import creating, parse


def serve_storage_proxy(storage: str, host: str, port: int, console: Console) -> None:
    """Serves ``storage`` (a database URL) on ``host:port`` until interrupted; creates its
    schema first where it is missing."""
    location = parse(storage)
    if location.kind not in ("database", "sqlite"):
        raise StorageError(
            f"the storage proxy serves a database (postgresql://... or sqlite:///...), not "
            f"{location.shown}"
        )
    with creating(storage) as backend:
        pass  # the schema, under the creation lock
    console.print(
        f"storage proxy for {location.shown} on grpc://{host}:{port}; workers connect with "
        f"--storage grpc://{host}:{port} (Ctrl-C to stop)",
        highlight=False,
        soft_wrap=True,
    )
    with warnings.catch_warnings():  # Optuna marks the proxy experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            optuna.storages.run_grpc_proxy_server(
                optuna.storages.get_storage(backend), host=host, port=port
            )
        except RuntimeError as error:  # grpc: the port is taken, or the host not this machine's
            raise StorageError(f"cannot serve on {host}:{port}: {error}") from None
        except ImportError as error:
            raise StorageError(
                f"the storage proxy needs {error.name or 'grpcio'}: pip install grpcio protobuf"
            ) from None
