# fedstale's app processes (the ServerApp and the ClientApps) on Flower's
# official SuperExec image. The SuperLink and SuperNodes run Flower's
# official images unchanged (see compose.yml): with `--isolation process`
# they never import the app, so only this image needs fedstale's
# dependencies (torch, flwr-datasets, ...). One image serves both sides: a
# SuperExec pointed at the SuperLink's Runtime API starts `flwr-serverapp`
# processes (the entrypoint, flower-superexec); next to a SuperNode,
# compose.yml runs `fedstale-superexec` from the same image (warm ClientApp
# workers; installed with fedstale), or flower-superexec with
# with-flower-superexec.yml (a `flwr-clientapp` process per message).
#
# Build from the repository root:
#   docker build -f docker/superexec.Dockerfile -t fedstale-superexec:0.1.0 .
ARG FLWR_VERSION=1.41.0
FROM flwr/superexec:${FLWR_VERSION}

WORKDIR /app

# flwr is already in the base image: drop the flwr[simulation] requirement
# (Ray is not needed here) and install the rest, CPU-only torch by default.
# /app/results is where the ServerApp writes (compose mounts a volume there).
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app fedstale ./fedstale
COPY --chown=app:app configs ./configs
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN sed -i 's/.*flwr\[simulation\].*//' pyproject.toml \
    && python -m pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" . \
    && mkdir -p /app/results

ENTRYPOINT ["flower-superexec"]
