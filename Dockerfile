# One image for the gateway, the consumer and the admin commands.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumer ./consumer
COPY sql ./sql
# Editable: the code stays in /app beside sql/, where the migrations are read from, so the
# console scripts (feedjobs-gateway, ...) work from any directory too.
RUN pip install --no-cache-dir -e .
RUN useradd --create-home feedjobs
USER feedjobs
ENV HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["python", "-m", "service", "gateway"]
