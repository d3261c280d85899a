"""Deployment: render, validate, diff, deploy, verify, record and roll back services.

Backends: ``kubernetes`` (server-side apply through the API server) and ``local`` (supervised
processes on this machine). The engine (:mod:`opscope.deploy.rollout`) is backend-neutral.
"""
