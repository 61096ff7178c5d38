"""The deployment files, checked offline: no Docker engine and no cluster run on these machines.

* the Kubernetes base, rendered the way kustomize renders it (namespace, labels, image), is valid
  against the Kubernetes schemas (kubernetes-validate) and has the properties ops rely on;
* ``deploy/compose.yaml`` is valid against the compose specification (check-jsonschema's vendored
  schema) and publishes only the gateway;
* every YAML file passes yamllint;
* the Dockerfile's commands are real ``taskroute`` commands, and a container given only the
  variables the files set (secrets as files) builds valid settings for each service.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer._click import Context
from typer.main import get_command
from yamllint import linter
from yamllint.config import YamlLintConfig

from services.cli.main import app as cli_app
from services.cli.registry import SERVICES
from services.gateway.settings import GatewaySettings
from services.vault.keys import root_key_provider
from services.vault.settings import VaultSettings
from shared.service_auth import ServiceIdentity, ensure_service_keys
from shared.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_BASE = DEPLOY / "k8s" / "base"
# The oldest Kubernetes minor still supported upstream when these manifests were written: the
# manifests use nothing newer (autoscaling/v2, policy/v1 are GA since 1.23 and 1.21).
KUBERNETES_VERSION = "1.30.0"
PEERS = {"gateway": ("router", "vault"), "router": ("gateway",), "vault": ("gateway", "router")}
PORTS = {"gateway": 8000, "router": 8001, "vault": 8002}
# Names of variables that carry a secret when given a literal value.
SECRET_NAME = re.compile(r"KEY|PEPPER|PASSWORD|SECRET|TOKEN|DATABASE_URL|REDIS_URL")
# What the Redis URL secret file holds in these tests (a password inside: hence a file).
REDIS_URL = "redis://:redis-pw@redis:6379/0"
# Compose's ``${NAME:-default}`` interpolation, as compose applies it with NAME unset.
INTERPOLATION = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


# ----------------------------------------------------------------------------- rendering


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render_kustomization(base: Path) -> list[dict[str, Any]]:
    """What ``kustomize build`` makes of our base: the subset of kustomize it uses (resources,
    namespace, ``labels`` without selectors, ``images``), applied to plain copies."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors"), "selectors must stay stable across versions"
        labels.update(entry["pairs"])
    rendered = []
    for resource in kustomization["resources"]:
        for doc in load_documents(base / resource):
            metadata = doc.setdefault("metadata", {})
            if doc["kind"] != "Namespace":
                metadata["namespace"] = kustomization["namespace"]
            metadata["labels"] = {**metadata.get("labels", {}), **labels}
            for container in pod_spec(doc).get("containers", []) if pod_spec(doc) else []:
                container["image"] = images.get(container["image"], container["image"])
            rendered.append(doc)
    return rendered


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return {}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render_kustomization(K8S_BASE)


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def yaml_files() -> Iterator[Path]:
    yield from sorted(DEPLOY.rglob("*.yaml"))
    yield from sorted(DEPLOY.rglob("*.yml"))


# ----------------------------------------------------------------------------- validators


def test_every_yaml_file_passes_yamllint():
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    problems = [
        f"{path.relative_to(REPO)}:{problem.line}: {problem.desc}"
        for path in yaml_files()
        for problem in linter.run(path.read_text(), config, str(path))
    ]
    assert problems == []


def test_the_kubernetes_manifests_are_valid_against_the_kubernetes_schemas(manifests):
    assert len(manifests) >= 15
    for doc in manifests:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_compose_file_is_valid_against_the_compose_specification():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- Kubernetes


def test_pods_run_restricted(manifests):
    pods = {**of_kind(manifests, "Deployment"), **of_kind(manifests, "Job")}
    assert set(pods) == {"gateway", "router", "vault", "taskroute-migrate"}
    for name, doc in pods.items():
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert set(container["resources"]) == {"requests", "limits"}, name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            for mount in container["volumeMounts"]:
                if "secret" in volumes[mount["name"]]:
                    assert mount["readOnly"] is True, name


def test_no_secret_value_is_written_into_an_environment(manifests):
    pods = [*of_kind(manifests, "Deployment").values(), *of_kind(manifests, "Job").values()]
    for doc in pods:
        for container in pod_spec(doc)["containers"]:
            for variable in container.get("env", []):
                if "value" in variable and SECRET_NAME.search(variable["name"]):
                    # Only a path to a mounted secret, never the secret itself.
                    assert variable["name"].endswith(("_FILE", "_DIR")), variable
                    assert variable["value"].startswith("/run/secrets/"), variable
    assert of_kind(manifests, "Secret") == {}  # Secrets are made by the operator, not shipped


def test_deployments_probe_health_and_readiness_and_run_taskroute(manifests):
    for name, doc in of_kind(manifests, "Deployment").items():
        [container] = pod_spec(doc)["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["image"] == "taskroute:0.1.0"
        assert container["args"] == ["serve", name, "--no-migrate"]
        assert_taskroute_command(container["args"])
        assert container["ports"] == [{"name": "http", "containerPort": PORTS[name]}]
    [job] = of_kind(manifests, "Job").values()
    assert pod_spec(job)["containers"][0]["args"] == ["migrate"]


def test_autoscalers_disruption_budgets_and_labels(manifests):
    hpas = of_kind(manifests, "HorizontalPodAutoscaler")
    assert {doc["spec"]["scaleTargetRef"]["name"] for doc in hpas.values()} == {"gateway", "router"}
    assert all(doc["spec"]["minReplicas"] >= 2 for doc in hpas.values())
    pdbs = of_kind(manifests, "PodDisruptionBudget")
    assert set(pdbs) == {"gateway", "router", "vault"}
    for doc in manifests:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "taskroute", doc["metadata"]["name"]
        assert "app.kubernetes.io/name" in labels, doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "taskroute"


def test_only_the_gateway_is_reachable_from_outside(manifests):
    services = of_kind(manifests, "Service")
    assert set(services) == {"gateway", "router", "vault"}
    assert all(doc["spec"]["type"] == "ClusterIP" for doc in services.values())
    policies = of_kind(manifests, "NetworkPolicy")
    deny = policies["taskroute-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def ingress_sources(target: str) -> list[dict[str, Any]]:
        [policy] = [
            p["spec"]
            for p in policies.values()
            if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": target}
        ]
        return [peer for rule in policy.get("ingress", []) for peer in rule.get("from", [{}])]

    # The gateway: from anywhere. Router and vault: from gateway pods (and the monitoring
    # namespace for /metrics), nothing else.
    assert ingress_sources("gateway") == [{}]
    internal_sources = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    assert ingress_sources("router") == internal_sources
    assert ingress_sources("vault") == internal_sources
    assert ingress_sources("migrate") == []

    # Only the gateway leaves the cluster for the internet: webhooks, https, never inward.
    [gateway] = [
        p["spec"] for p in policies.values() if p["metadata"]["name"] == "taskroute-gateway"
    ]
    [webhooks] = [
        rule
        for rule in gateway["egress"]
        if {"protocol": "TCP", "port": 443} in rule.get("ports", [])
    ]
    blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"]["except"]) for peer in webhooks["to"]}
    assert {"10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"} <= blocks[
        "0.0.0.0/0"
    ]
    assert "fc00::/7" in blocks["::/0"]
    for name in ("taskroute-router", "taskroute-vault"):
        egress = policies[name]["spec"]["egress"]
        assert not any(port.get("port") == 443 for rule in egress for port in rule.get("ports", []))


# ----------------------------------------------------------------------------- compose


def test_compose_publishes_only_the_gateway_and_waits_for_health():
    services = compose()["services"]
    assert [name for name, svc in services.items() if "ports" in svc] == ["gateway"]
    for dependency in ("postgres", "redis"):
        assert services[dependency]["healthcheck"]["test"]
    assert services["migrate"]["command"] == ["migrate"]
    assert_taskroute_command(services["migrate"]["command"])
    for name in ("vault", "router"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    assert services["gateway"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("redis", "vault", "router")
    }
    for name in ("gateway", "router", "vault"):
        assert services[name]["command"] == ["serve", name, "--no-migrate"]
        assert_taskroute_command(services[name]["command"])
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]


def test_compose_passes_secrets_as_files_only():
    data = compose()
    declared = set(data["secrets"])
    for name, service in data["services"].items():
        for variable, value in service.get("environment", {}).items():
            if SECRET_NAME.search(variable) and not variable.endswith(("_FILE", "_DIR")):
                # A database URL names its host and user; the password comes from PGPASSFILE.
                assert variable.endswith("DATABASE_URL"), (name, variable)
                assert "@" in value
                assert ":" not in value.split("//", 1)[1].split("@")[0]
        for secret in service.get("secrets", []):
            assert (secret if isinstance(secret, str) else secret["source"]) in declared
    for secret in data["secrets"].values():
        assert set(secret) == {"file"}
        assert secret["file"].startswith("./secrets/")


# ----------------------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def exec_form(argument: str) -> list[str]:
    """A JSON-array (exec-form) instruction argument; a shell-form one fails here."""
    assert argument.startswith("["), f"not exec form: {argument}"
    parsed = yaml.safe_load(argument)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def assert_taskroute_command(args: list[str]) -> None:
    """``args`` parse as a ``taskroute`` command line (the same parser the console script uses)."""
    command = get_command(cli_app)
    context = Context(command, info_name="taskroute")
    subcommand = command.get_command(context, args[0])  # type: ignore[attr-defined]
    assert subcommand is not None, f"no taskroute command {args[0]!r}"
    subcommand.make_context(args[0], list(args[1:]), parent=context)


def test_dockerfile_is_multi_stage_slim_non_root_and_runs_taskroute():
    instructions = dockerfile_instructions()
    args = [value for kind, value in instructions if kind == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    stages = [value for kind, value in instructions if kind == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    [user] = [value for kind, value in instructions if kind == "USER"]
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user)  # numeric, not root
    [entrypoint] = [value for kind, value in instructions if kind == "ENTRYPOINT"]
    [cmd] = [value for kind, value in instructions if kind == "CMD"]
    assert exec_form(entrypoint) == ["taskroute"]
    assert_taskroute_command(exec_form(cmd))
    [healthcheck] = [value for kind, value in instructions if kind == "HEALTHCHECK"]
    probe = exec_form(healthcheck.split("CMD", 1)[1].strip())
    assert probe[0] == "python"
    assert "/healthz" in probe[-1]
    assert "curl" not in healthcheck
    runtime = instructions[[i for i, (k, _) in enumerate(instructions) if k == "FROM"][1] :]
    runtime_text = " ".join(value for _, value in runtime)
    for tool in ("pytest", "mypy", "ruff", "[dev]", "gcc", "curl"):
        assert tool not in runtime_text
    env_names = [
        word.split("=", 1)[0]
        for kind, value in instructions
        if kind == "ENV"
        for word in value.split()
    ]
    assert not [name for name in env_names if SECRET_NAME.search(name)]
    ignored = (REPO / ".dockerignore").read_text()
    assert "**/*.key" in ignored
    assert "!services/**" in ignored


def read_lock() -> tuple[dict[str, str], dict[str, list[str]]]:
    """``deploy/requirements.lock`` (pip-compile's format): name -> version, name -> sha256s."""
    versions: dict[str, str] = {}
    hashes: dict[str, list[str]] = {}
    current = ""
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        entry = line.strip().removesuffix("\\").strip()
        if not entry or entry.startswith("#"):
            continue
        if not line[0].isspace():
            assert not entry.startswith("-"), f"no pip options in the lock: {entry}"
            name, version = entry.split("==")
            current = re.sub(r"[-_.]+", "-", name).lower()
            versions[current], hashes[current] = version, []
        else:
            assert entry.startswith("--hash=sha256:"), entry
            hashes[current].append(entry.removeprefix("--hash=sha256:"))
    return versions, hashes


def test_the_image_lock_pins_every_runtime_dependency_as_pyproject_does():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock, _ = read_lock()
    for requirement in project["dependencies"]:
        name, version = re.sub(r"\[.*\]", "", requirement).split("==")
        assert lock.get(re.sub(r"[-_.]+", "-", name).lower()) == version, requirement
    for dev_tool in ("pytest", "mypy", "ruff", "yamllint", "pip-tools"):
        assert dev_tool not in lock


def test_the_image_installs_only_files_whose_hashes_are_locked():
    """Every locked package carries the sha256 of its files, and the image's pip refuses any
    other file (``--require-hashes``), so a substituted distribution fails the build."""
    versions, hashes = read_lock()
    assert len(versions) > 40
    for name, digests in hashes.items():
        assert digests, f"{name} has no --hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in digests), name
    [install] = [
        value
        for kind, value in dockerfile_instructions()
        if kind == "RUN" and "requirements.lock" in value
    ]
    assert "--require-hashes" in install.split()
    assert "--no-deps" in install.split()  # the lock is complete: nothing resolved at build time


# ----------------------------------------------------------------------------- settings


def secret_files(tmp_path: Path) -> dict[str, Path]:
    """Stand-ins for the mounted secrets: real keys, a real pepper, a real root key."""
    keys = tmp_path / "all-keys"
    ensure_service_keys(keys)
    files = {
        "pepper": tmp_path / "api-key-pepper",
        "operator": tmp_path / "operator.key",
        "root": tmp_path / "vault-root.key",
        "pgpass": tmp_path / "pgpass",
        "redis_url": tmp_path / "redis-url",
    }
    files["pepper"].write_text("p" * 48 + "\n")
    files["operator"].write_text("tr_operator_" + "o" * 40 + "\n")
    files["root"].write_bytes(os.urandom(32))
    files["pgpass"].write_text("postgres:5432:*:taskroute:pw\n")
    files["redis_url"].write_text(REDIS_URL + "\n")
    for service, peers in PEERS.items():
        folder = tmp_path / f"{service}-keys"
        folder.mkdir()
        (folder / f"{service}.key").write_bytes((keys / f"{service}.key").read_bytes())
        for peer in peers:
            (folder / f"{peer}.pub").write_bytes((keys / f"{peer}.pub").read_bytes())
    return files


def local_path(service: str, container_path: str, tmp_path: Path, files: dict[str, Path]) -> str:
    """Where a container path of a mounted secret lives in this test."""
    if container_path.endswith("/service-keys"):
        return str(tmp_path / f"{service}-keys")
    for name, path in (
        (("api-key-pepper", "api_key_pepper"), files["pepper"]),
        (("operator.key", "operator_key"), files["operator"]),
        (("vault-root.key", "vault_root_key"), files["root"]),
        (("pgpass",), files["pgpass"]),
        (("redis-url", "redis_url"), files["redis_url"]),
    ):
        if container_path.endswith(name):
            return str(path)
    raise AssertionError(f"unknown secret path {container_path}")


def assert_settings_work(service: str, expected_url: str, files: dict[str, Path]) -> None:
    settings: ServiceSettings = SERVICES[service].settings()
    assert settings.is_production()
    assert settings.resolved_database_url() == expected_url
    assert settings.host == "0.0.0.0"
    assert settings.port == PORTS[service]
    identity = ServiceIdentity.load(
        name=service, keys_dir=settings.keys_dir(), peers=PEERS[service]
    )
    assert set(identity.peer_keys) == set(PEERS[service])
    assert settings.tracing_enabled is False  # on only when an operator says so
    if isinstance(settings, GatewaySettings):
        assert settings.resolved_api_key_pepper() == b"p" * 48
        # The replicas share rate limits through Redis, its URL read from the secret file.
        assert settings.redis_url is not None
        assert settings.redis_url.get_secret_value() == REDIS_URL
        assert settings.bootstrap_operator_key is not None
        assert settings.router_url == "http://router:8001"
        assert settings.vault_url == "http://vault:8002"
    if isinstance(settings, VaultSettings):
        root = root_key_provider(settings).load()
        assert root is not None  # unsealed from the mounted file
        assert settings.generate_root_key is False


@pytest.mark.parametrize("service", ["gateway", "router", "vault"])
def test_the_compose_environment_alone_makes_valid_settings(service, tmp_path, monkeypatch):
    files = secret_files(tmp_path)
    environment = compose()["services"][service]["environment"]
    for name, value in environment.items():
        text = INTERPOLATION.sub(lambda match: match.group(1), str(value))
        if text.startswith("/run/secrets/"):
            text = local_path(service, text, tmp_path, files)
        monkeypatch.setenv(name, text)
    expected = environment[f"TASKROUTE_{service.upper()}_DATABASE_URL"]
    assert_settings_work(service, expected, files)
    assert shlex.split(os.environ["PGPASSFILE"]) == [str(files["pgpass"])]


@pytest.mark.parametrize("service", ["gateway", "router", "vault"])
def test_the_kubernetes_environment_alone_makes_valid_settings(
    service, manifests, tmp_path, monkeypatch
):
    files = secret_files(tmp_path)
    [container] = pod_spec(of_kind(manifests, "Deployment")[service])["containers"]
    url = f"postgresql+asyncpg://taskroute@db.example:5432/taskroute_{service}"
    for variable in container["env"]:
        if "valueFrom" in variable:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference == {"name": "taskroute-database-urls", "key": service}
            monkeypatch.setenv(variable["name"], url)
            continue
        value = variable["value"]
        if value.startswith("/run/secrets/"):
            value = local_path(service, value, tmp_path, files)
        monkeypatch.setenv(variable["name"], value)
    assert_settings_work(service, url, files)


def test_migrations_get_what_taskroute_migrate_needs(manifests, tmp_path, monkeypatch):
    files = secret_files(tmp_path)
    [container] = pod_spec(of_kind(manifests, "Job")["taskroute-migrate"])["containers"]
    for variable in container["env"]:
        if "valueFrom" in variable:
            key = variable["valueFrom"]["secretKeyRef"]["key"]
            monkeypatch.setenv(variable["name"], f"postgresql+asyncpg://t@db/taskroute_{key}")
        else:
            value = variable["value"]
            if value.startswith("/run/secrets/"):
                value = local_path("gateway", value, tmp_path, files)
            monkeypatch.setenv(variable["name"], value)
    for service in ("gateway", "router", "vault"):
        settings = SERVICES[service].settings()
        assert settings.resolved_database_url().endswith(f"taskroute_{service}")


# ----------------------------------------------------------------------------- *_FILE secrets


def test_the_gateway_reads_its_pepper_and_bootstrap_key_from_files(tmp_path, monkeypatch):
    pepper, operator = tmp_path / "pepper", tmp_path / "operator"
    pepper.write_text("q" * 40 + "\n")
    operator.write_text("tr_operator_" + "k" * 40 + "\r\n")
    monkeypatch.setenv("TASKROUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("TASKROUTE_GATEWAY_DATABASE_URL", "postgresql+asyncpg://t@db/g")
    monkeypatch.setenv("TASKROUTE_GATEWAY_API_KEY_PEPPER_FILE", str(pepper))
    monkeypatch.setenv("TASKROUTE_BOOTSTRAP_OPERATOR_KEY_FILE", str(operator))
    settings = GatewaySettings()
    assert settings.resolved_api_key_pepper() == b"q" * 40  # the newline is not part of it
    assert settings.bootstrap_operator_key is not None
    assert settings.bootstrap_operator_key.get_secret_value() == "tr_operator_" + "k" * 40
    assert "q" * 40 not in repr(settings)

    # A value given directly wins over the file.
    monkeypatch.setenv("TASKROUTE_GATEWAY_API_KEY_PEPPER", "d" * 32)
    assert GatewaySettings().resolved_api_key_pepper() == b"d" * 32


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read"), ("short\n", "at least 32 characters")],
)
def test_a_missing_or_weak_pepper_file_is_refused(tmp_path, monkeypatch, content, message):
    pepper = tmp_path / "pepper"
    if content is not None:
        pepper.write_text(content)
    monkeypatch.setenv("TASKROUTE_GATEWAY_API_KEY_PEPPER_FILE", str(pepper))
    with pytest.raises(ValueError, match=message):
        GatewaySettings()


def test_base64_of_a_root_key_is_not_what_the_file_holds(tmp_path):
    """The root key file holds 32 raw bytes (docs/operations.md), not base64 text."""
    path = tmp_path / "root.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode())
    settings = VaultSettings(root_key_file=path, generate_root_key=False)
    with pytest.raises(RuntimeError, match="exactly 32 bytes"):
        root_key_provider(settings).load()
