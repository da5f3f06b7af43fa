# One image for the gateway, the consumer and the admin commands.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumer ./consumer
COPY sql ./sql
RUN pip install --no-cache-dir .
RUN useradd --create-home feedjobs
USER feedjobs
ENV HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["python", "-m", "service", "gateway"]
