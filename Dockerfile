# xenlive in a container: the same host tools and package as scripts/setup installs.
#   docker build -t xenlive .
#   docker run --privileged -v "$PWD/out:/out" xenlive build -o /out/default.iso
FROM debian:bookworm
COPY . /opt/xenlive
WORKDIR /opt/xenlive
RUN bash scripts/setup && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/xenlive/.venv/bin:$PATH
ENTRYPOINT ["xenlive"]
