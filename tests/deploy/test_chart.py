"""The Helm chart, rendered offline with helm-python-sdk (Helm's own Go library).

Every profile is linted, every manifest validated against Kubernetes' schemas, and the
promises of the chart are asserted: security contexts, probes, hook order, HPA/KEDA
exclusivity, KEDA triggers equal to the provisioned work consumers, secrets kept out
of ConfigMaps, and values that break the schema refused.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from lumiku_bgremover.cli import parser
from lumiku_bgremover.contracts.common import App
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.envparse import Env
from lumiku_bgremover.integration_settings import (
    integration_settings_from_env,
    notifier_settings_from_env,
)
from lumiku_bgremover.permissions import run_permissions
from lumiku_bgremover.permissions_page import page_settings
from lumiku_bgremover.provisioning import StreamNames, work_consumer_configs
from lumiku_bgremover.settings import Limits, NatsSettings, Settings

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "lumiku-bgremover"
PACKAGE = ROOT / "src" / "lumiku_bgremover"
#: The newest Kubernetes release kubernetes-validate knows (current), for validation and lint.
KUBE_VERSION = kubernetes_validate.utils.latest_version()
#: The oldest release Chart.yaml's kubeVersion admits: manifests are validated for it too.
OLDEST_KUBE_VERSION = "1.27.0"
#: Kinds from CRDs (KEDA, Prometheus Operator): kubernetes-validate has no schema for them.
CRD_KINDS = {"ScaledObject", "ServiceMonitor"}
POD_KINDS = {"Deployment", "Job", "CronJob", "Pod"}

EXISTING_SECRET = {
    "secrets": {"existingSecret": "lumiku-prod"},
    "nats": {
        "auth": {"credsSecret": {"name": "lumiku-nats-creds", "key": "svc.creds"}},
        "tls": {"secretName": "lumiku-nats-tls", "clientCert": True},
    },
}
LOCAL_ENGINE = {
    "image": {"tag": "0.1.0-local"},
    "engines": {
        "tierRouting": "basic=local:isnet-medium,standard=local:isnet-medium,"
        "professional=local:isnet-medium,industry=local:isnet-medium",
        "local": {"enabled": True, "threads": 2},
    },
}
INTEGRATIONS = {
    "integrations": {
        "apps": ["avatar-creator", "upscaler"],
        "streams": {"avatar-creator": "AVATAR_EVENTS"},
        "durables": {"upscaler": "BG_FROM_UPSCALER"},
        "provisionStream": True,
    },
}
NOTIFIER = {
    "notifier": {
        "enabled": True,
        "replicaCount": 2,
        "smtp": {
            "host": "smtp.mail.svc",
            "port": 2525,
            "starttls": False,
            "from": "Lumiku <hi@x.id>",
        },
    },
    "secrets": {"smtpUser": "mailer", "smtpPassword": "mail-secret-1"},
}
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "integrations": INTEGRATIONS,
    "notifier": NOTIFIER,
    "hpa": {"autoscaling": {"enabled": True}},
    "keda": {"keda": {"enabled": True}},
    "existing-secret": EXISTING_SECRET,
    "local-engine": LOCAL_ENGINE,
    "everything": {
        "keda": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {}}]},
        "secrets": {"databaseUrl": "postgresql://u:p@db/lumiku", "s3AccessKey": "ak"},
        "integrations": INTEGRATIONS["integrations"],
        "notifier": {"enabled": True, "smtp": {"host": "smtp.mail.svc"}},
    },
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    loaded = helm.Chart.load(CHART)
    try:
        yield loaded
    finally:
        loaded.close()


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest the chart renders for `values`, as dicts (NOTES.txt left out)."""
    files = chart.render(values, name="rel", namespace="apps", is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def notes(chart: helm.Chart, values: dict[str, Any]) -> str:
    files = chart.render(values, name="rel", namespace="apps", is_install=True)
    [text] = [text for path, text in files.items() if path.endswith("NOTES.txt")]
    return text


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap", "rel-lumiku-bgremover")["data"]


def hook(doc: dict[str, Any]) -> tuple[str, int] | None:
    notes = doc["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in notes:
        return None
    return notes["helm.sh/hook"], int(notes.get("helm.sh/hook-weight", "0"))


# --- lint and validation ------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_lint_is_clean(profile: str) -> None:
    report = helm.lint(CHART, PROFILES[profile], strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 2 warning, 3 error


def test_validation_is_for_a_current_kubernetes() -> None:
    major, minor = (int(part) for part in KUBE_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33)
    assert f">={OLDEST_KUBE_VERSION}-0" in (CHART / "Chart.yaml").read_text()


@pytest.mark.parametrize("version", [OLDEST_KUBE_VERSION, KUBE_VERSION])
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_manifest_is_valid_kubernetes(chart: helm.Chart, profile: str, version: str) -> None:
    unchecked = set()
    for doc in render(chart, PROFILES[profile]):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.add(doc["kind"])
    assert unchecked <= CRD_KINDS


WORKER, API = "rel-lumiku-bgremover-worker", "rel-lumiku-bgremover-api"
NOTIFIER_NAME = "rel-lumiku-bgremover-notifier"
ROLES = {WORKER: "worker", API: "api"}


def test_a_broken_manifest_would_be_caught(chart: helm.Chart) -> None:
    deployment = one(render(chart, {}), "Deployment", WORKER)
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


# --- security, probes, grace ----------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_pod_runs_locked_down(chart: helm.Chart, profile: str) -> None:
    pods = [doc for doc in render(chart, PROFILES[profile]) if doc["kind"] in POD_KINDS]
    assert {doc["kind"] for doc in pods} >= {"Deployment", "Job", "CronJob", "Pod"}
    for doc in pods:
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        for container in containers(spec):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/models"} <= mounts  # HOME, TMPDIR, MODEL_CACHE_DIR writable


@pytest.mark.parametrize("name", sorted(ROLES))
def test_probes_hit_the_health_endpoints(chart: helm.Chart, name: str) -> None:
    docs = render(chart, {"metrics": {"port": 9191}})
    [service] = pod_spec(one(docs, "Deployment", name))["containers"]
    assert service["ports"] == [{"name": "metrics", "containerPort": 9191, "protocol": "TCP"}]
    paths = {
        probe: (service[probe]["httpGet"]["path"], service[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/livez", "metrics"),
        "livenessProbe": ("/livez", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }
    assert config_data(docs)["METRICS_PORT"] == "9191"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_one_deployment_per_role(chart: helm.Chart, profile: str) -> None:
    docs = render(chart, PROFILES[profile] | {"extraEnvVars": [{"name": "X", "value": "1"}]})
    notifier = PROFILES[profile].get("notifier", {}).get("enabled", False)
    expected = set(ROLES) | ({NOTIFIER_NAME} if notifier else set())
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == expected
    selectors = []
    for name, role in ROLES.items():
        deployment = one(docs, "Deployment", name)
        [container] = pod_spec(deployment)["containers"]
        assert container["env"] == [{"name": "ROLE", "value": role}, {"name": "X", "value": "1"}]
        assert container["args"] == ["run"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == role
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        selectors.append(selector)
    assert selectors[0] != selectors[1]  # neither Deployment adopts the other's pods
    assert config_data(docs)["LOG_FORMAT"] == "json"
    assert "ROLE" not in config_data(docs)  # the one setting that differs lives on the pod
    service = one(docs, "Service")["spec"]["selector"]
    for name in ROLES:  # the metrics Service reaches the pods of both roles
        labels = pod_spec_labels(one(docs, "Deployment", name))
        assert service.items() <= labels.items()


def pod_spec_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


def test_only_workers_mount_the_local_engine_weights(chart: helm.Chart) -> None:
    docs = render(chart, LOCAL_ENGINE)
    assert "initContainers" in pod_spec(one(docs, "Deployment", WORKER))
    api = pod_spec(one(docs, "Deployment", API))
    assert "initContainers" not in api
    assert api["containers"][0]["resources"] == chart.values["api"]["resources"]


@pytest.mark.parametrize("name", sorted(ROLES))
def test_resources_spread_and_disruption_budget(chart: helm.Chart, name: str) -> None:
    docs = render(chart, {})
    deployment = one(docs, "Deployment", name)
    spec = pod_spec(deployment)
    assert spec["containers"][0]["resources"]["requests"]["cpu"]
    keys = [c["topologyKey"] for c in spec["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(
        c["labelSelector"]["matchLabels"] == selector for c in spec["topologySpreadConstraints"]
    )
    pdb = one(docs, "PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize("name", sorted(ROLES))
@pytest.mark.parametrize(("grace", "timeout"), [(None, None), (300, 240), (17, 1)])
def test_grace_period_outlasts_an_engine_call(
    chart: helm.Chart, name: str, grace: int | None, timeout: int | None
) -> None:
    values: dict[str, Any] = {"secrets": {"s3AccessKey": "ak", "s3SecretKey": "sk"}}
    if grace is not None:
        values |= {"terminationGracePeriodSeconds": grace, "engines": {"timeoutS": timeout}}
    docs = render(chart, values)
    spec = pod_spec(one(docs, "Deployment", name))
    # what the service reads: the drain a stopping worker gives its in-flight items
    settings = Settings.from_env(environment(docs, name))
    drain = settings.limits.work_drain_s
    assert spec["terminationGracePeriodSeconds"] > drain > settings.engines.timeout_s
    assert drain == spec["terminationGracePeriodSeconds"] - 15


@pytest.mark.parametrize(("grace", "timeout"), [(60, 60), (75, 60), (16, 1)])
def test_a_grace_period_shorter_than_an_engine_call_is_refused(
    chart: helm.Chart, grace: int, timeout: int
) -> None:
    values = {"terminationGracePeriodSeconds": grace, "engines": {"timeoutS": timeout}}
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)):
        render(chart, values)


# --- hooks, jobs, tests ------------------------------------------------------------------------


def test_migrate_then_provision_before_install_and_upgrade(chart: helm.Chart) -> None:
    docs = render(chart, {})
    hooks = {(d["kind"], d["metadata"]["name"]): hook(d) for d in docs if hook(d)}
    job = one(docs, "Job", "rel-lumiku-bgremover-migrate")
    assert hooks[("Job", "rel-lumiku-bgremover-migrate")] == ("pre-install,pre-upgrade", 0)
    for kind in ("ConfigMap", "Secret"):  # what the Job reads exists before it
        assert hooks[(kind, "rel-lumiku-bgremover-migrate")] == ("pre-install,pre-upgrade", -10)
    spec = pod_spec(job)
    assert [c["args"] for c in spec["initContainers"]] == [["migrate"]]
    assert [c["args"] for c in spec["containers"]] == [["provision"]]
    assert spec["restartPolicy"] == "Never"
    hook_config = one(docs, "ConfigMap", "rel-lumiku-bgremover-migrate")["data"]
    assert hook_config == config_data(docs)


def test_helm_test_asks_for_a_quote(chart: helm.Chart) -> None:
    docs = render(chart, {})
    pod = one(docs, "Pod")
    assert hook(pod) == ("test", 0)
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "quote"
    assert dict(zip(args[1::2], args[2::2], strict=True)) == {
        "--user": "helm-test",
        "--tier": "basic",
        "--count": "1",
        "--timeout": "15",
    }


def test_cleanup_cronjob(chart: helm.Chart) -> None:
    docs = render(chart, {"retention": {"batchesDays": 45}, "cleanup": {"schedule": "0 4 * * *"}})
    cron = one(docs, "CronJob")
    assert cron["spec"]["schedule"] == "0 4 * * *"
    assert pod_spec(cron)["containers"][0]["args"] == ["cleanup"]
    assert config_data(docs)["RETENTION_BATCHES_DAYS"] == "45"
    assert of_kind(render(chart, {"cleanup": {"enabled": False}}), "CronJob") == []


# --- scaling ------------------------------------------------------------------------------------


API_HPA = {"api": {"autoscaling": {"enabled": True}}}


@pytest.mark.parametrize(
    ("values", "replicas", "hpas", "scaled_object"),
    [
        ({}, {WORKER: 2, API: 2}, set(), False),
        (PROFILES["hpa"], {API: 2}, {WORKER}, False),
        (PROFILES["keda"], {API: 2}, set(), True),
        (API_HPA, {WORKER: 2}, {API}, False),
        (PROFILES["keda"] | API_HPA, {}, {API}, True),
        (PROFILES["hpa"] | API_HPA | {"replicaCount": 5}, {}, {WORKER, API}, False),
        ({"replicaCount": 5, "api": {"replicaCount": 3}}, {WORKER: 5, API: 3}, set(), False),
    ],
)
def test_hpa_and_keda_are_exclusive_and_own_replicas(
    chart: helm.Chart,
    values: dict[str, Any],
    replicas: dict[str, int],
    hpas: set[str],
    scaled_object: bool,
) -> None:
    docs = render(chart, values)
    rendered = {
        d["metadata"]["name"]: d["spec"]["replicas"]
        for d in of_kind(docs, "Deployment")
        if "replicas" in d["spec"]
    }
    assert rendered == replicas
    targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    assert targets == hpas
    assert {h["metadata"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")} == hpas
    objects = of_kind(docs, "ScaledObject")
    assert len(objects) == int(scaled_object)
    for scaled in objects:  # KEDA drives the workers only
        assert scaled["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER}  # fmt: skip


def test_hpa_and_keda_together_are_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="mutually exclusive"):
        render(chart, {"autoscaling": {"enabled": True}, "keda": {"enabled": True}})


@pytest.mark.parametrize(("prefix", "partitions"), [("BGREMOVE", 8), ("STAGING_BG", 3)])
def test_keda_triggers_are_the_provisioned_work_consumers(
    chart: helm.Chart, prefix: str, partitions: int
) -> None:
    values = {"keda": {"enabled": True}, "nats": {"streamPrefix": prefix}}
    docs = render(chart, values | {"work": {"partitions": partitions}})
    triggers = one(docs, "ScaledObject")["spec"]["triggers"]
    nats = NatsSettings(stream_prefix=prefix)
    provisioned = [
        c.durable_name for c in work_consumer_configs(nats, Limits(work_partitions=partitions))
    ]
    assert [t["metadata"]["consumer"] for t in triggers] == provisioned
    assert provisioned == [
        StreamNames.of(nats).work_consumer(lane, p) for lane in Lane for p in range(partitions)
    ]
    assert {t["type"] for t in triggers} == {"nats-jetstream"}
    assert {t["metadata"]["stream"] for t in triggers} == {StreamNames.of(nats).work}
    assert len({t["name"] for t in triggers}) == len(triggers)
    config = config_data(docs)
    assert (config["NATS_STREAM_PREFIX"], config["WORK_PARTITIONS"]) == (prefix, str(partitions))


# --- configuration and secrets --------------------------------------------------------------


def app_variables() -> set[str]:
    """`<APP>_STREAM` and `<APP>_DURABLE`, which integration_settings.py names per app."""
    return {f"{app.value.upper().replace('-', '_')}_{end}" for app in App
            for end in ("STREAM", "DURABLE")}  # fmt: skip


def settings_variables() -> set[str]:
    """Every environment variable the settings modules (`*settings.py`) read."""
    getter = r'env\.(?:text|integer|number|flag|items|file|dir|required)\(\s*"([A-Z0-9_]+)"'
    helper = r'\w+\(env, "([A-Z0-9_]+)"'  # _https_url(env, "HF_ENDPOINT", ...)
    modules = sorted(PACKAGE.glob("*settings.py"))
    assert {m.name for m in modules} >= {
        "settings.py", "engine_settings.py", "integration_settings.py"}  # fmt: skip
    source = "".join(module.read_text() for module in modules)
    return set(re.findall(getter, source)) | set(re.findall(helper, source)) | app_variables()


def test_settings_variables_finds_each_module() -> None:
    found = settings_variables()
    assert {"NATS_URL", "HF_ENDPOINT", "INTEGRATION_APPS", "SMTP_HOST", "NOTIFY_RETRY_S",
            "UPSCALER_STREAM", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= found  # fmt: skip
    assert "SMTP_HOSTNAME" not in found


SECRET_VARIABLES = {
    "DATABASE_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "NATS_USER", "NATS_PASSWORD",
    "NATS_TOKEN", "HF_TOKEN", "SEGMIND_API_KEY", "SMTP_USER", "SMTP_PASSWORD",
}  # fmt: skip


def container_env(doc: dict[str, Any]) -> dict[str, str]:
    """Literal `env` values of the service container of a Deployment."""
    [service] = pod_spec(doc)["containers"]
    return {e["name"]: e["value"] for e in service.get("env", []) if "value" in e}


def environment(docs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """What the Deployment's container sees: ConfigMap, the chart's Secret, its env."""
    secret = one(docs, "Secret", "rel-lumiku-bgremover").get("data") or {}
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    return config_data(docs) | decoded | container_env(one(docs, "Deployment", deployment))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_config_uses_the_variables_settings_reads(chart: helm.Chart, profile: str) -> None:
    known = settings_variables()
    assert known >= SECRET_VARIABLES
    docs = render(chart, PROFILES[profile])
    for config in of_kind(docs, "ConfigMap"):
        assert set(config["data"]) <= known - SECRET_VARIABLES
    for secret in of_kind(docs, "Secret"):
        assert set(secret.get("data") or {}) <= SECRET_VARIABLES
    for deployment in of_kind(docs, "Deployment"):
        [service] = pod_spec(deployment)["containers"]
        named = {e["name"] for e in service["env"]}
        assert named <= known - SECRET_VARIABLES, deployment["metadata"]["name"]


@pytest.mark.parametrize("login", ["natsUser", "natsToken"])
def test_secrets_never_reach_a_configmap(chart: helm.Chart, login: str) -> None:
    fields = {
        "databaseUrl": "DATABASE_URL", "s3AccessKey": "S3_ACCESS_KEY",
        "s3SecretKey": "S3_SECRET_KEY", "natsUser": "NATS_USER", "natsPassword": "NATS_PASSWORD",
        "natsToken": "NATS_TOKEN", "hfToken": "HF_TOKEN", "segmindApiKey": "SEGMIND_API_KEY",
        "smtpUser": "SMTP_USER", "smtpPassword": "SMTP_PASSWORD",
    }  # fmt: skip
    other = {"natsUser": ("natsToken",), "natsToken": ("natsUser", "natsPassword")}[login]
    fields = {field: name for field, name in fields.items() if field not in other}
    markers = {field: f"marker-{field}-7f3a" for field in fields}
    docs = render(chart, {"secrets": markers} | {"notifier": NOTIFIER["notifier"]})
    for doc in docs:  # ConfigMaps, and the pods' literal env (the notifier's SMTP_* too)
        if doc["kind"] != "Secret":
            text = yaml.safe_dump(doc)
            assert not [m for m in markers.values() if m in text], doc["metadata"]["name"]
    for secret in of_kind(docs, "Secret"):  # the release's and the hook's copy
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert decoded == {fields[f]: marker for f, marker in markers.items()}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"secrets": {"natsUser": "svc"}}, "natsUser and secrets.natsPassword go together"),
        ({"secrets": {"natsUser": "svc", "natsPassword": "pw", "natsToken": "t"}},
         "use one NATS login"),
        ({"secrets": {"natsToken": "t"}, "nats": {"auth": {"credsSecret": {"name": "c"}}}},
         "use one NATS login"),
    ],
)  # fmt: skip
def test_nats_logins_the_service_would_refuse_fail_the_render(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)


def test_existing_secret_and_nats_files(chart: helm.Chart) -> None:
    docs = render(chart, EXISTING_SECRET)
    assert of_kind(docs, "Secret") == []
    config = config_data(docs)
    assert config["NATS_CREDS"] == "/etc/lumiku/nats-creds/svc.creds"
    assert config["NATS_TLS_CA"] == "/etc/lumiku/nats-tls/ca.crt"
    assert config["NATS_TLS_KEY"] == "/etc/lumiku/nats-tls/tls.key"
    for doc in (d for d in docs if d["kind"] in POD_KINDS):
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["nats-creds"]["secret"]["secretName"] == "lumiku-nats-creds"
        assert volumes["nats-tls"]["secret"]["secretName"] == "lumiku-nats-tls"
        for container in spec["containers"]:
            refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
            assert refs == ["lumiku-prod"]


def test_local_engine_weights_from_the_image_or_a_claim(chart: helm.Chart) -> None:
    spec = pod_spec(one(render(chart, LOCAL_ENGINE), "Deployment", WORKER))
    [copy] = spec["initContainers"]
    assert copy["command"] == ["cp", "-a", "/opt/lumiku/models/.", "/models/"]
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}["models"]
    weights = {"source": "volume", "existingClaim": "weights"}
    claim = {"engines": {"local": {"enabled": True, "weights": weights}}}
    spec = pod_spec(one(render(chart, claim), "Deployment", WORKER))
    assert "initContainers" not in spec
    models = {v["name"]: v for v in spec["volumes"]}["models"]
    assert models["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    with pytest.raises(helm.HelmRenderError, match="existingClaim"):
        render(chart, {"engines": {"local": {"enabled": True, "weights": {"source": "volume"}}}})


def test_segmind_image_transport_is_a_value(chart: helm.Chart) -> None:
    assert config_data(render(chart, {}))["SEGMIND_IMAGE_TRANSPORT"] == "base64"
    url = {"engines": {"segmindImageTransport": "url"}}
    assert config_data(render(chart, url))["SEGMIND_IMAGE_TRANSPORT"] == "url"


def test_optional_monitoring_and_network_policy(chart: helm.Chart) -> None:
    docs = render(chart, PROFILES["everything"])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert of_kind(render(chart, {}), "ServiceMonitor") == []
    assert of_kind(render(chart, {}), "NetworkPolicy") == []


# --- schema and documentation -----------------------------------------------------------------


BAD_VALUES = """
nats:
  streamReplicas: 7
work:
  partitions: 0
"""


@pytest.mark.parametrize(
    "values",
    [
        yaml.safe_load(BAD_VALUES),
        {"retention": {"batchesDays": 3}},
        {"metrics": {"port": 0}},
        {"nats": {"servers": ["http://nats:4222"]}},
        {"engines": {"local": {"weights": {"source": "s3"}}}},
        {"engines": {"segmindImageTransport": "presigned"}},
        {"replicas": 3},
        {"config": {"logFormat": "xml"}},
        {"api": {"replicaCount": 0}},
        {"api": {"role": "worker"}},
        {"integrations": {"apps": ["photoshop"]}},
        {"integrations": {"apps": ["upscaler", "upscaler"]}},
        {"integrations": {"streams": {"upscaler": "UP SCALER"}}},
        {"integrations": {"durables": {"photoshop": "X"}}},
        {"integrations": {"provisionStream": "yes"}},
        {"notifier": {"enabled": True}},
        {"notifier": {"replicaCount": 0}},
        {"notifier": {"smtp": {"port": 0}}},
        {"notifier": {"smtp": {"user": "u"}}},
    ],
)
def test_values_breaking_the_schema_are_refused(chart: helm.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


def test_a_values_file_breaking_the_schema_fails_lint(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_VALUES)
    report = helm.lint(CHART, yaml.safe_load(path.read_text()), strict=True)
    assert any("streamReplicas" in error or "partitions" in error for error in report["errors"])


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def test_every_value_is_documented(chart: helm.Chart) -> None:
    documented = set(
        re.findall(r"^## @param (\S+) ", (CHART / "values.yaml").read_text(), re.MULTILINE)
    )
    missing = [
        path
        for path in leaf_paths(chart.values)
        if not any(path == d or path.startswith(f"{d}.") for d in documented)
    ]
    assert missing == []
    leaves = list(leaf_paths(chart.values))
    unknown = [d for d in documented if not any(p == d or p.startswith(f"{d}.") for p in leaves)]
    assert unknown == []


def test_helm_create_layout() -> None:
    for name in (
        "Chart.yaml", "values.yaml", "values.schema.json", "README.md", ".helmignore",
        "templates/_helpers.tpl", "templates/NOTES.txt", "templates/deployment.yaml",
        "templates/deployment-api.yaml", "templates/_deployment.tpl",
        "templates/deployment-notifier.yaml",
        "templates/hpa.yaml", "templates/service.yaml", "templates/serviceaccount.yaml",
        "templates/tests/test-quote.yaml",
    ):  # fmt: skip
        assert (CHART / name).is_file(), name


# --- integrations -------------------------------------------------------------------------------


def hook_provision_args(docs: list[dict[str, Any]]) -> list[str]:
    [provision] = pod_spec(one(docs, "Job", "rel-lumiku-bgremover-migrate"))["containers"]
    return provision["args"]


def test_a_fresh_install_waits_for_no_other_apps_stream(chart: helm.Chart) -> None:
    docs = render(chart, {})
    config = config_data(docs)
    assert config["INTEGRATION_APPS"] == "none"
    assert not app_variables() & set(config)
    assert "INTEGRATIONS_PROVISION_STREAM" not in config
    assert hook_provision_args(docs) == ["provision"]
    integrations = integration_settings_from_env(Env(environment(docs, API)))
    assert integrations.apps == frozenset()
    assert integrations.bindings("BGREMOVE") == ()


def test_each_enabled_app_is_bound_to_its_stream_and_durable(chart: helm.Chart) -> None:
    docs = render(chart, INTEGRATIONS)
    config = config_data(docs)
    assert config["INTEGRATION_APPS"] == "avatar-creator,upscaler"
    assert config["AVATAR_CREATOR_STREAM"] == "AVATAR_EVENTS"
    assert config["UPSCALER_DURABLE"] == "BG_FROM_UPSCALER"
    assert not {"POSE_GENERATOR_STREAM", "UPSCALER_STREAM", "AVATAR_CREATOR_DURABLE"} & set(config)
    integrations = integration_settings_from_env(Env(environment(docs, WORKER)))
    bindings = {b.app: (b.stream, b.durable) for b in integrations.bindings("BGREMOVE")}
    assert bindings == {
        App.AVATAR_CREATOR: ("AVATAR_EVENTS", "BGREMOVE_INTEGRATIONS_AVATAR_CREATOR"),
        App.UPSCALER: ("BGREMOVE_INTEGRATIONS", "BG_FROM_UPSCALER"),
    }
    assert integrations.provision_stream is False  # only the hook creates it


def test_only_the_hook_may_create_the_integrations_stream(chart: helm.Chart) -> None:
    args = hook_provision_args(render(chart, INTEGRATIONS))
    assert args == ["provision", "--integrations-stream"]
    assert parser().parse_args(args).integrations_stream is True  # the flag the CLI takes
    for deployment in of_kind(render(chart, INTEGRATIONS), "Deployment"):
        assert pod_spec(deployment)["containers"][0]["args"] == ["run"]


def test_the_readme_says_how_to_bind_each_app() -> None:
    readme = (CHART / "README.md").read_text()
    for name in ("INTEGRATION_APPS", "integrations.apps", "integrations.provisionStream",
                 "--integrations-stream", *sorted(app_variables())):  # fmt: skip
        assert name in readme, name


# --- notifier ------------------------------------------------------------------------------------


def test_no_notifier_unless_enabled(chart: helm.Chart) -> None:
    docs = render(chart, {"notifier": {"smtp": {"host": "smtp"}}})
    assert NOTIFIER_NAME not in {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert "SMTP_HOST" not in config_data(docs)


def test_the_notifier_runs_its_command_with_smtp_settings(chart: helm.Chart) -> None:
    docs = render(chart, NOTIFIER)
    deployment = one(docs, "Deployment", NOTIFIER_NAME)
    [service] = pod_spec(deployment)["containers"]
    assert service["args"] == ["notifier"]
    assert "ROLE" not in container_env(deployment)  # ROLE=notifier is not a role of `run`
    assert deployment["spec"]["replicas"] == 2
    assert service["resources"] == chart.values["notifier"]["resources"]
    settings = notifier_settings_from_env(Env(environment(docs, NOTIFIER_NAME)))
    smtp = settings.smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.starttls, smtp.sender) == (
        "smtp.mail.svc", 2525, False, "Lumiku <hi@x.id>")  # fmt: skip
    assert (smtp.user, smtp.password) == ("mailer", "mail-secret-1")
    assert (settings.retry_delay_s, settings.retry_max_s) == (30, 900)
    for name in ROLES:  # the others get no SMTP settings of their own
        assert not [k for k in container_env(one(docs, "Deployment", name)) if "SMTP" in k]


def test_the_notifier_is_probed_like_the_other_roles(chart: helm.Chart) -> None:
    docs = render(chart, NOTIFIER | {"metrics": {"port": 9191}})
    [notifier] = pod_spec(one(docs, "Deployment", NOTIFIER_NAME))["containers"]
    [worker] = pod_spec(one(docs, "Deployment", WORKER))["containers"]
    for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe", "securityContext"):
        assert notifier[key] == worker[key], key
    assert notifier["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    labels = pod_spec_labels(one(docs, "Deployment", NOTIFIER_NAME))
    assert one(docs, "Service")["spec"]["selector"].items() <= labels.items()  # scraped too


@pytest.mark.parametrize(("replicas", "budget"), [(1, False), (2, True)])
def test_the_notifier_gets_a_disruption_budget_when_replicated(
    chart: helm.Chart, replicas: int, budget: bool
) -> None:
    values = {"notifier": {"enabled": True, "replicaCount": replicas, "smtp": {"host": "h"}}}
    docs = render(chart, values)
    names = {d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")}
    assert (NOTIFIER_NAME in names) is budget
    assert set(ROLES) <= names
    if budget:
        selector = one(docs, "Deployment", NOTIFIER_NAME)["spec"]["selector"]["matchLabels"]
        pdb = one(docs, "PodDisruptionBudget", NOTIFIER_NAME)
        assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_smtp_credentials_come_in_pairs(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="go together"):
        render(chart, {"secrets": {"smtpUser": "mailer"}})


def test_smtp_credentials_from_an_existing_secret(chart: helm.Chart) -> None:
    docs = render(chart, EXISTING_SECRET | {"notifier": NOTIFIER["notifier"]})
    [service] = pod_spec(one(docs, "Deployment", NOTIFIER_NAME))["containers"]
    assert {"secretRef": {"name": "lumiku-prod"}} in service["envFrom"]
    assert of_kind(docs, "Secret") == []
    readme = (CHART / "README.md").read_text()
    assert "SMTP_USER" in readme
    assert "SMTP_PASSWORD" in readme


def test_provisioning_at_start_is_a_value(chart: helm.Chart) -> None:
    assert config_data(render(chart, {}))["PROVISION_ON_START"] == "true"
    off = config_data(render(chart, {"nats": {"provisionOnStart": False}}))
    assert off["PROVISION_ON_START"] == "false"
    assert (
        Settings.from_env({"PROVISION_ON_START": off["PROVISION_ON_START"]}).provision_on_start
        is False
    )


def test_the_readme_summary_of_permissions_is_what_the_code_grants() -> None:
    readme = (CHART / "README.md").read_text()
    start = readme.index("## NATS permissions of the service's user")
    section = readme[start : readme.index("\n## ", start + 1)]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    named = set(re.findall(r"`((?:bgremove|upscaler|\$JS|_INBOX)[^`<]*)`", table))
    service = run_permissions(page_settings())
    granted = {g.subject for g in (*service.publish, *service.subscribe)}
    assert len(named) >= 15  # the regex finds the table's subjects
    assert named - granted == set()
    assert service.allow_responses
    assert "$JS.API.CONSUMER.PAUSE" not in "".join(granted)  # an operator's, not the service's


def test_the_readme_points_at_the_permissions_page() -> None:
    readme = (CHART / "README.md").read_text()
    assert "(../../../docs/nats-permissions.md)" in readme
    assert (CHART / "../../../docs/nats-permissions.md").resolve().is_file()


def test_notes_name_the_notifier_and_the_integrations(chart: helm.Chart) -> None:
    fresh = notes(chart, {})
    assert "INTEGRATION_APPS=none" in fresh
    assert "notifier" not in fresh.lower().split("operate it")[0]
    bound = notes(chart, INTEGRATIONS | NOTIFIER)
    assert "avatar-creator on stream AVATAR_EVENTS" in bound
    assert "upscaler on stream BGREMOVE_INTEGRATIONS" in bound
    assert f"{NOTIFIER_NAME}" in bound
