# The runtime base image: Debian bookworm minbase, the shared libraries the distribution
# links against (runtime-packages.txt), the unpacked release tarball in /opt, and
# pyisolate-python as the entrypoint, run as an unprivileged user. No compiler, no
# package that brings one (checked by docker/images.py).
ARG BASE=pyisolate/bookworm-minbase
FROM ${BASE}
ARG RELEASE
COPY runtime-packages.txt /tmp/pyisolate/
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      $(sed 's/#.*//' /tmp/pyisolate/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/pyisolate
# ADD unpacks the .tar.xz (owner root, modes from the deterministic tarball).
ADD ${RELEASE}.tar.xz /opt/
RUN ln -s ${RELEASE} /opt/pyisolate \
 && useradd --system --uid 10001 --user-group --home-dir /home/sandbox --create-home --shell /usr/sbin/nologin sandbox
USER 10001:10001
WORKDIR /home/sandbox
ENTRYPOINT ["/opt/pyisolate/bin/pyisolate-python"]
