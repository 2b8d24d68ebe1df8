"""Manifests used by the end-to-end tests."""

from __future__ import annotations


def deployment(name: str, replicas: int = 3, *, version: str = "v1", command: list[str] | None = None,
               max_surge: str | int = 1, max_unavailable: str | int = 0, probe: bool = True,
               cpu: str = "10m") -> str:  # fmt: skip
    cmd = command or ["python3", "-u", "examples/apps/hello.py"]
    probe_yaml = (
        """
          readinessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 1"""
        if probe
        else ""
    )
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {max_surge}, maxUnavailable: {max_unavailable}}}
  template:
    metadata:
      labels: {{app: {name}, version: {version}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          command: {cmd!r}
          env: [{{name: VERSION, value: {version}}}]
          ports: [{{name: http, containerPort: 8080}}]
          resources:
            requests: {{cpu: {cpu}, memory: 16Mi}}{probe_yaml}
"""
