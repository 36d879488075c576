"""The command lines and ``config.toml`` of a :class:`~fedstale.deployment.LocalDeployment`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..certificates import Credentials
from ..simulation.launcher import format_run_config


FEDERATION = "deploy"
"""The name of the SuperLink connection in ``$FLWR_HOME/config.toml``."""


SUPEREXECS = ("fedstale", "flower", "supernode")
"""The ``superexec`` choices of :class:`LocalDeployment`."""


class CommandLines:
    """The command lines and ``config.toml`` of a deployment on 127.0.0.1.

    Parameters
    ----------
    bin_dir : Path
        Where ``flower-superlink``, ``flower-supernode`` and ``flwr`` are.
    port : int
        The SuperLink's Fleet API port.
    credentials : Credentials | None
        TLS files; ``None`` means ``--insecure``.
    supernode_auth : bool
        Whether the SuperLink requires SuperNode authentication.
    superexec : str
        Who runs the ClientApps (:data:`SUPEREXECS`, see :class:`LocalDeployment`).
    superexec_args : list[str]
        Extra flags for each ``fedstale superexec``.
    """

    def __init__(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        bin_dir: Path,
        port: int,
        credentials: Credentials | None,
        supernode_auth: bool,
        superexec: str = "fedstale",
        superexec_args: list[str] | None = None,
    ) -> None:
        self.bin_dir = bin_dir
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.credentials = credentials
        self.supernode_auth = supernode_auth
        self.superexec = superexec
        self.superexec_args = list(superexec_args or [])

    def config_toml(self) -> str:
        """``config.toml`` with the federation ``deploy`` pointing at the SuperLink."""
        lines = ["[superlink]", f'default = "{FEDERATION}"', "", f"[superlink.{FEDERATION}]"]
        lines.append(f'address = "{self.address}"')
        if self.credentials is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.credentials.ca_cert.resolve()}"')
        return "\n".join(lines) + "\n"

    def _tls_server_args(self) -> list[str]:
        if self.credentials is None:
            return ["--insecure"]
        creds = self.credentials
        return [
            "--ssl-ca-certfile",
            str(creds.ca_cert),
            "--ssl-certfile",
            str(creds.server_cert),
            "--ssl-keyfile",
            str(creds.server_key),
        ]

    def superlink(self) -> list[str]:
        """The ``flower-superlink`` command line."""
        command = [str(self.bin_dir / "flower-superlink"), *self._tls_server_args()]
        if self.supernode_auth:
            command.append("--enable-supernode-auth")
        return command + [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]

    def supernode(
        self,
        partition_id: int,
        num_partitions: int,
        port: int,
        private_key: Path | None = None,
        max_retries: int | None = None,
    ) -> list[str]:
        """The ``flower-supernode`` command line for one SuperNode."""
        command = [str(self.bin_dir / "flower-supernode")]
        if self.credentials is None:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(self.credentials.ca_cert)]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
        if max_retries is not None:
            command += ["--max-retries", str(max_retries)]
        if self.superexec != "supernode":
            command += ["--isolation", "process"]
        if self.credentials is not None:  # the Runtime API serves TLS too
            creds = self.credentials
            command += ["--ssl-certfile", str(creds.server_cert), "--ssl-keyfile", str(creds.server_key),
                        "--ssl-ca-certfile", str(creds.ca_cert)]
        return command + [
            "--superlink",
            self.address,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--node-config",
            f"partition-id={partition_id} num-partitions={num_partitions}",
        ]

    def superexec_command(
        self, port: int, parent_pid: int | None = None, task_log: Path | None = None
    ) -> list[str]:
        """The SuperExec command line next to a SuperNode whose Runtime API is on ``port``.

        ``fedstale superexec`` and ``flower-superexec`` take the same flags;
        the former also writes one JSON line per task to ``task_log``
        (:meth:`LocalDeployment.superexec_tasks`).
        """
        if self.superexec == "fedstale":
            command = [sys.executable, "-m", "fedstale.superexec"]
        else:
            command = [str(self.bin_dir / "flower-superexec")]
        if self.credentials is None:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(self.credentials.ca_cert)]
        command += ["--runtime-api-address", f"127.0.0.1:{port}"]
        if parent_pid is not None:
            command += ["--parent-pid", str(parent_pid)]
        if self.superexec == "fedstale":
            if task_log is not None:
                command += ["--task-log", str(task_log)]
            command += self.superexec_args
        return command

    def flwr_run(self, app_dir: str | Path, run_config: dict[str, Any] | None = None) -> list[str]:
        """The ``flwr run`` command line for ``app_dir`` on this deployment."""
        command = [str(self.bin_dir / "flwr"), "run", str(app_dir), FEDERATION, "--stream"]
        if run_config:
            command += ["--run-config", format_run_config(run_config)]
        return command
