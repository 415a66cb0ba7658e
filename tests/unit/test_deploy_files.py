"""docker-compose.yml, the Dockerfile and the Kubernetes manifests are consistent with the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.cli import COMMANDS
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _k8s() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "infra" / "k8s" / "racewire.yaml").read_text()) if d]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s() if d["kind"] == kind]


def test_manifests_have_the_expected_objects() -> None:
    kinds = sorted(d["kind"] for d in _k8s())
    assert kinds == sorted(["ConfigMap", "Secret", "Service", "Service", "StatefulSet", "Deployment",
                            "HorizontalPodAutoscaler"])
    for d in _k8s():
        assert d["apiVersion"] and d["metadata"]["name"].startswith("racewire")


def test_configuration_keys_are_real_settings() -> None:
    fields = {f"RACEWIRE_{name.upper()}" for name in Settings.model_fields}
    for doc in _by_kind("ConfigMap") + _by_kind("Secret"):
        data = doc.get("data") or doc.get("stringData") or {}
        assert set(data) <= fields, set(data) - fields


def test_dataflow_statefulset_matches_its_cluster_addresses() -> None:
    (sts,) = _by_kind("StatefulSet")
    (cm,) = _by_kind("ConfigMap")
    addresses = cm["data"]["RACEWIRE_FLOW_ADDRESSES"].split(";")
    assert sts["spec"]["replicas"] == len(addresses) == int(cm["data"]["RACEWIRE_WORKERS"])
    assert all(a.startswith(f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}:")
               for i, a in enumerate(addresses))
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "recovery"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["flow", "race"] and "--recovery-dir" in container["args"]
    headless = next(s for s in _by_kind("Service") if s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_serving_probes_point_at_a_real_route_and_the_autoscaler_at_the_deployment() -> None:
    from serving.app import create_app

    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))  # nothing connects until it runs
    paths = set(app.openapi()["paths"])
    (dep,) = _by_kind("Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    (hpa,) = _by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_compose_services_run_real_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "schema-registry", "redis", "postgres", "flow", "serving", "proxy", "simulator"} <= set(services)
    assert services["serving"]["deploy"]["replicas"] >= 2
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    for name in ("topics", "flow", "serving", "simulator"):
        assert services[name]["command"][0] in COMMANDS, name
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
                copied.add(src)
    # the image installs every package the wheel is built from (a package left out breaks every import of it)
    with (ROOT / "pyproject.toml").open("rb") as f:
        packages = tomllib.load(f)["tool"]["mypy"]["packages"]
    assert set(packages) <= copied, sorted(set(packages) - copied)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_config_validates() -> None:
    env = {**os.environ, "RACEWIRE_API_KEY": "k" * 32, "RACEWIRE_TOKEN_SECRET": "s" * 48, "POSTGRES_PASSWORD": "p" * 16}
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------ security (issue 11)


def _serving_args() -> list[list[str]]:
    (dep,) = _by_kind("Deployment")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return [dep["spec"]["template"]["spec"]["containers"][0]["args"], compose["services"]["serving"]["command"]]


def test_no_secret_values_are_shipped_in_the_manifests() -> None:
    (secret,) = _by_kind("Secret")
    values = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
    assert not values, f"the Secret ships values: {sorted(values)}; create it with kubectl instead"
    text = (ROOT / "infra" / "k8s" / "racewire.yaml").read_text() + (ROOT / "docker-compose.yml").read_text()
    for placeholder in ("replace-me", "dev-key", "changeme"):
        assert placeholder not in text, placeholder


def test_forwarded_headers_are_trusted_only_from_the_proxy_network() -> None:
    for args in _serving_args():
        assert "*" not in args and "--forwarded-allow-ips" not in args, args
    (cm,) = _by_kind("ConfigMap")
    assert cm["data"]["RACEWIRE_TRUSTED_PROXIES"] and "*" not in cm["data"]["RACEWIRE_TRUSTED_PROXIES"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["serving"]["environment"]
    assert env["RACEWIRE_TRUSTED_PROXIES"] and "*" not in env["RACEWIRE_TRUSTED_PROXIES"]


def test_probes_keep_a_pod_serving_from_postgresql() -> None:
    (dep,) = _by_kind("Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
