# The rewind service image used by docker-compose.yml.
FROM python:3.11.14-slim-bookworm
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY . .
# The native build (docs/native.md) needs a C compiler; it is removed again once rewind is built.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir --no-deps --no-build-isolation . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* build
ENV REWIND_HOME=/var/lib/rewind
EXPOSE 8080
CMD ["rewind", "serve"]
