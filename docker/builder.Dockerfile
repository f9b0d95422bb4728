# The builder: Debian bookworm + the packages the build driver needs, and the driver's
# Python dependencies (pinned with hashes; the wheels come in the build context, fetched
# by docker/images.py on the host). It runs the same `python -m pyisolate_build`
# as a native build, on a checkout mounted at /src (see docker/images.py).
#
# BASE is the minbase root file system imported from docker/rootfs.sh here; on a machine
# that reaches a registry, pass a digest-pinned image instead, e.g.
#   --build-arg BASE=debian:bookworm-slim@sha256:<digest>
ARG BASE=pyisolate/bookworm-minbase
FROM ${BASE}
COPY system-packages.txt build.txt /tmp/pyisolate/
COPY wheels /tmp/pyisolate/wheels/
# The driver's own list (CPython, cfi and native-extension build dependencies), plus
# what runs it: git (the epoch and commit come from the checkout), python3-venv, and CA
# certificates for the pinned downloads (python.org, PyPI).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      $(sed 's/#.*//' /tmp/pyisolate/system-packages.txt) git python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/driver \
 && /opt/driver/bin/pip install -q --disable-pip-version-check --require-hashes --only-binary=:all: \
      --no-index --find-links /tmp/pyisolate/wheels -r /tmp/pyisolate/build.txt \
 && rm -rf /tmp/pyisolate \
 && git config --system --add safe.directory '*'
ENV PATH=/opt/driver/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/src/build LC_ALL=C.UTF-8
WORKDIR /src
CMD ["sh", "-c", "python -m pyisolate_build dist && python -m pyisolate_build release --ephemeral-key"]
