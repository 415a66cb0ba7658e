# racewire: one image for every deployable (dataflow, serving, simulator, tools).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY dataflows dataflows
COPY simulator simulator
COPY strategy strategy
COPY serving serving
COPY infra infra
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 racewire
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER racewire
WORKDIR /home/racewire
ENV RACEWIRE_DATA_DIR=/data
EXPOSE 8000
ENTRYPOINT ["racewire"]
CMD ["serve", "--host", "0.0.0.0"]
