# One image for the whole demo mesh: the control plane (pyproxy-control), the sidecars and the ingress gateway
# (pyproxy), and Istio's bookinfo apps (python -m bookinfo.app). docker-compose.yml runs it as every service.
#   docker build -t pyproxy-mesh:local .          (any Python >= 3.10 base works: --build-arg BASE_IMAGE=...)
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# Optional: a CA bundle for builds behind a TLS-intercepting proxy. Only a build context made for such a machine
# contains build-ca.crt; the repository never does (see scripts/compose-demo.sh).
COPY pyproject.toml README.md /src/
COPY pyproxy /src/pyproxy
COPY control /src/control
COPY bookinfo /src/bookinfo
COPY examples/mesh /etc/pyproxy/mesh
COPY pyproject.toml build-ca.cr[t] /tmp/build-ca/
RUN if [ -f /tmp/build-ca/build-ca.crt ]; then cp /tmp/build-ca/build-ca.crt /etc/ssl/certs/ca-certificates.crt; fi \
    && python3 -m venv /opt/pyproxy \
    && /opt/pyproxy/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && rm -rf /src /tmp/build-ca

ENV PATH=/opt/pyproxy/bin:$PATH \
    PYTHONUNBUFFERED=1
# No ENTRYPOINT: each compose service says which program it is.
CMD ["pyproxy", "--help"]
