# The vipcheck agent image: the node reader (vipcheck-node) and nft on a slim Python base, for the
# DaemonSet `vipcheck manifests` prints (docs/agents.md). Build it with `make agent-image`: the
# build context is build/agent/, the wheels built on the host (vipcheck, pyroute2, pip), and
# nothing else of the checkout. The DaemonSet gives the command; the image sets none.
ARG BASE=python:3.12-slim
FROM ${BASE}

# The wheels stay in their layer (about 2.5 MB): the legacy builder, which the lab uses, has no
# RUN --mount to install them from without copying.
COPY *.whl /wheels/

# One step: nft from Debian where the base lacks it (the Python images have none), then the
# package with --no-deps (the reader imports only the standard library, vipcheck and pyroute2),
# installed by pip's own wheel so that a base without pip works too; the reader and nft must
# run, or the build fails here rather than on a node.
RUN set -e; \
    if ! command -v nft >/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends nftables; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    set -- /wheels/pip-*.whl; \
    python3 "$1/pip" install --no-index --no-deps --no-cache-dir \
        --disable-pip-version-check --root-user-action=ignore \
        /wheels/vipcheck-*.whl /wheels/pyroute2-*.whl; \
    vipcheck-node --help >/dev/null; \
    nft --version
