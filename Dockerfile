# The Stockade image: the agent (`stockade agent`), the CNI plugin and its installer
# (`stockade-cni`), and the uninstall commands. Build: docker build -t stockade:0.1.0 .
#
# The lab builds the same image without Docker (tests/images/build.py, image `stockade`), from the
# same Debian packages, the same image/requirements.txt and the project's wheel;
# tests/unit/test_image_recipe.py checks that the two agree.
#
# What runs as root and why: the agent and the uninstall cleanup run as uid 0 with only NET_ADMIN
# and NET_RAW (nftables and netlink; Kubernetes gives added capabilities to root only); the CNI
# installer runs as uid 0 with no capability (it writes the root-owned /opt/cni/bin and
# /etc/cni/net.d). The image's default user is nobody: whatever the chart does not ask for runs
# unprivileged (e.g. the uninstall Job, which only talks to the API).

# Debian 12.11, the point release the lab's hosts run; the tag names it exactly.
ARG DEBIAN=debian:12.11-slim

FROM ${DEBIAN} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY compiler compiler
COPY controller controller
COPY image/requirements.txt image/requirements.txt
# The project's wheel (no dependencies), then exactly the pinned dependency wheels, hash-checked,
# for the final stage's Python (CPython 3.11, manylinux x86_64), binary wheels only: no compiler.
# --break-system-packages: Debian's pip refuses even a --target install under its PEP 668 marker.
RUN python3 -m pip wheel --no-deps --wheel-dir /wheels . \
 && python3 -m pip download --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
      --platform manylinux2014_x86_64 --require-hashes --no-deps -r image/requirements.txt -d /wheels \
 && python3 -m pip install --no-index --no-deps --no-compile --break-system-packages --target /opt/stockade /wheels/*.whl

FROM ${DEBIAN}
# Debian's libnftables (and its Python binding, which loads it): the nft the node's kernel speaks.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 libnftables1 python3-nftables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/stockade /opt/stockade
ENV PATH=/opt/stockade/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/stockade \
    PYTHONDONTWRITEBYTECODE=1
USER 65534:65534
ENTRYPOINT ["stockade"]
CMD ["--help"]
