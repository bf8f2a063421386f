# The rewind service image used by docker-compose.yml.
FROM python:3.11.14-slim-bookworm
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
ENV REWIND_HOME=/var/lib/rewind
EXPOSE 8080
CMD ["rewind", "serve"]
