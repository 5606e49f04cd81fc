"""A minimal app (/healthz, /api/status, /metrics) used only when device.web cannot be imported."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def create_app(config, services) -> Flask:
    app = Flask("smearscope")

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    @app.get("/api/status")
    def status():
        return jsonify(services.status())

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(services.registry), mimetype=CONTENT_TYPE_LATEST)

    return app
