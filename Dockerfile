# xenlive in a container, building as an unprivileged user (README.md, "Containers", gives the
# docker and podman command lines and the --privileged fallback).
FROM debian:trixie

# The host tools: the same package list and script as a machine set up by hand.
COPY . /usr/src/xenlive
RUN bash /usr/src/xenlive/scripts/setup --packages-only \
    && python3 -m venv /opt/xenlive \
    && /opt/xenlive/bin/pip install --no-cache-dir /usr/src/xenlive \
    && rm -rf /usr/src/xenlive /var/lib/apt/lists/*

# The build user. xenlive enters a user namespace in which it is root, with this user's
# subordinate ids above it (builder/userns.py); these two ranges are every id but the user's own
# below 65536, which a rootless engine has to give, so the same image works there too.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash xenlive \
    && printf 'xenlive:1:999\nxenlive:1001:64535\n' > /etc/subuid \
    && printf 'xenlive:1:999\nxenlive:1001:64535\n' > /etc/subgid \
    && install -d -o xenlive -g xenlive /home/xenlive/.cache/xenlive /out
USER xenlive
ENV PATH=/opt/xenlive/bin:$PATH
# The cache (a volume keeps it between runs) and where ISOs are written by default.
VOLUME ["/home/xenlive/.cache/xenlive"]
WORKDIR /out
ENTRYPOINT ["xenlive"]
CMD ["--help"]
