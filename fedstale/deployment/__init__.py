"""A real Flower deployment on one machine: a SuperLink, SuperNodes, ``flwr run``.

:class:`LocalDeployment` starts ``flower-superlink`` and ``flower-supernode``
processes on 127.0.0.1 with free ports and a private ``FLWR_HOME`` (whose
``config.toml`` names the SuperLink as the federation ``deploy``), submits
runs with ``flwr run APP deploy --stream`` exactly as a user would on two
machines, and stops every process it started by PID, including the
SuperExec, ``flwr-serverapp`` and ``flwr-clientapp`` processes Flower
starts in sessions of their own (see :mod:`fedstale.processes`). With
:class:`~fedstale.certificates.Credentials` the SuperLink serves TLS (and
so do the SuperNodes' Runtime APIs) and may require SuperNode
authentication.

Each SuperNode's ClientApps run under one of three SuperExecs
(``superexec=``):

- ``"fedstale"`` (default): the SuperNode is started with ``--isolation
  process`` and next to it ``python -m fedstale.superexec`` (the ``fedstale
  superexec`` command, :mod:`fedstale.superexec`), which serves every task
  in a warm worker process;
- ``"flower"``: the same topology with Flower's ``flower-superexec`` in its
  place (one ``flwr-clientapp`` process per task), the same flags;
- ``"supernode"``: Flower's default, the SuperNode (``--isolation
  subprocess``) starts ``flower-superexec`` itself.

Example::

    with LocalDeployment(tmp_path) as dep:
        dep.start_superlink()
        for p in range(2):
            dep.start_supernode(p, 2)
        dep.wait_for_supernodes(2)
        proc = dep.run(".", {"delay.clock": "wall", "data.num_clients": 2}, check=True)
"""

from .commands import FEDERATION, SUPEREXECS, CommandLines
from .local import LocalDeployment
from .nodes import ACTIVATED, DeploymentError, SuperNodeControl, read_task_log, running_tasks

__all__ = [
    "ACTIVATED", "FEDERATION", "SUPEREXECS", "CommandLines", "DeploymentError", "LocalDeployment",
    "SuperNodeControl", "read_task_log", "running_tasks",
]
