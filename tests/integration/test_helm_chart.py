"""helm/ibkr-bridge rendered by the real Helm engine (helm-python-sdk bundles Helm v4) and every
manifest validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict mode).

The two Prometheus Operator kinds have no schema in kubernetes-validate; they are checked
against closed schemas of the fields this chart uses (``OPERATOR_SCHEMAS``) so a misspelt
field fails here rather than in a cluster.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from bridge.config import SECRET_KEYS, load_settings
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm/ibkr-bridge"
KUBE_VERSIONS = ("1.27", "1.37")  # the chart's kubeVersion floor and the newest schema shipped

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "kafka": {
        "sink": {
            "kind": "kafka",
            "kafka": {
                "bootstrapServers": ["kafka-0.kafka:9093", "kafka-1.kafka:9094"],
                "tls": True,
                "sasl": {"enabled": True, "existingSecret": "kafka-credentials"},
            },
        },
        "spool": {"persistence": {"enabled": False}},
        "subscriptions": {"marketData": {"conids": [265598, "8314@SMART", "28812380;;;265598/1,8314/-1"],
                                         "fields": ["31", "84", "86"]}},
        "admin": {"existingSecret": "bridge-admin"},
    },
    "redis": {
        "sink": {"kind": "redis", "redis": {"url": "rediss://redis.data:6380/2", "existingSecret": "redis-auth"}},
        "networkPolicy": {"brokersTo": [{"podSelector": {"matchLabels": {"app": "redis"}}}]},
    },
    "ibeam": {
        "ibeam": {"enabled": True, "existingSecret": "ibeam-login", "allowList": ["127.0.0.1", "10.42.*"]},
    },
    "gateway_ca": {
        "gateway": {"url": "https://ibeam.trading.svc:5000", "ca": {"existingSecret": "ibeam-ca", "key": "ca.pem"}},
        "networkPolicy": {"adminFrom": [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]},
    },
    "oauth": {
        "gateway": {"oauth": {"enabled": True, "existingSecret": "ibkr-oauth"}, "compete": True},
    },
    "tuned": {
        "gateway": {"account": "U1234567", "heartbeatTimeoutS": 20, "tickleIntervalS": 45},
        "sink": {"redis": {"username": "bridge"}},  # ignored: the sink is Kafka
        "log": {"format": "auto"},
        "extraConfig": {"session": {"smd_refresh_s": 300}, "sink": {"kafka": {"create_topics": True}}},
    },
    "topics": {
        "sink": {"kafka": {"topics": {"create": True, "partitions": 12, "replication": 3}}},
        "ibeam": {"enabled": True, "existingSecret": "ibeam-login", "image": {"tag": "0.5.9"}},
    },
    "servicemonitor": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboards": {"label": "grafana_dashboard", "labelValue": "ibkr"},
    },
}

_OPEN = {"type": "object"}
_STRING = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STRING}
_DURATION = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}


def _closed(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def _operator_kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {"type": "object", "required": ["name"], "properties": {"labels": _LABELS, "annotations": _LABELS}}
    return _closed(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion={"const": "monitoring.coreos.com/v1"},
        kind={"const": kind},
        metadata=metadata,
        spec=spec,
    )


_ENDPOINT = _closed([], port=_STRING, path=_STRING, interval=_DURATION, scrapeTimeout=_DURATION)
_RULE = _closed(["expr"], alert=_STRING, record=_STRING, expr=_STRING, labels=_LABELS, annotations=_LABELS,
                **{"for": _DURATION})  # fmt: skip
_GROUP = _closed(["name", "rules"], name=_STRING, interval=_DURATION, rules={"type": "array", "items": _RULE})
OPERATOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _operator_kind(
        "ServiceMonitor",
        _closed(["selector", "endpoints"], selector=_OPEN, endpoints={"type": "array", "minItems": 1, "items": _ENDPOINT}),
    ),
    "PrometheusRule": _operator_kind("PrometheusRule", _closed(["groups"], groups={"type": "array", "items": _GROUP})),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``Kind/name -> manifest`` for every object the chart renders with ``values``."""
    rendered = chart.render(values, name="bridge", namespace="trading", is_install=True)
    objects: dict[str, dict[str, Any]] = {}
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects[f"{document['kind']}/{document['metadata']['name']}"] = document
    return objects


def validate(manifest: dict[str, Any], kube_version: str) -> None:
    schema = OPERATOR_SCHEMAS.get(manifest["kind"])
    if schema is not None:
        jsonschema.validate(manifest, schema)
    else:
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def workload(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects.values() if o["kind"] in {"Deployment", "StatefulSet"}]
    return found


def container(objects: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def bridge_config(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(objects["ConfigMap/bridge-ibkr-bridge"]["data"]["bridge.yaml"])
    return loaded


def secret_files(objects: dict[str, dict[str, Any]]) -> set[str]:
    """Every file the bridge container sees under its projected secrets volume."""
    pod = workload(objects)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = set()
    for mount in container(objects, "bridge")["volumeMounts"]:
        volume = volumes.get(mount["name"], {})  # the spool claim is no pod volume
        projected = volume.get("projected")
        for source in projected["sources"] if projected else ():
            files |= {f"{mount['mountPath']}/{item['path']}" for item in source["secret"]["items"]}
        for kind in ("secret", "configMap"):  # a whole Secret or ConfigMap (the gateway's CA)
            if kind in volume and mount["name"] != "config":
                files |= {f"{mount['mountPath']}/{item['path']}" for item in volume[kind]["items"]}
    return files


def file_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``dotted.key -> path`` for every ``*_file`` key of a bridge configuration."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found |= file_keys(value, f"{prefix}{key}.")
        elif key.endswith("_file"):
            found[f"{prefix}{key}"] = value
    return found


def egress_ports(objects: dict[str, dict[str, Any]]) -> set[int]:
    policy = objects["NetworkPolicy/bridge-ibkr-bridge"]
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def leaf_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths |= leaf_paths(value, path + ".")
        else:
            paths.add(path)
    return paths


# ------------------------------------------------------------------------------ lint and schemas


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_reports_no_errors_or_warnings(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    chart: helm.Chart, variant: str, kube_version: str
) -> None:
    objects = render(chart, VARIANTS[variant])
    assert len(objects) >= 6
    for name, manifest in objects.items():
        try:
            validate(manifest, kube_version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{variant}: {name} is invalid for Kubernetes {kube_version}: {exc.message}")


def test_the_schema_validator_rejects_a_misspelt_field(chart: helm.Chart) -> None:
    manifest = workload(render(chart, {}))
    manifest["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(manifest, KUBE_VERSIONS[-1], strict=True)
    monitor = render(chart, VARIANTS["servicemonitor"])["ServiceMonitor/bridge-ibkr-bridge"]
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeTimout"):
        validate(monitor, KUBE_VERSIONS[-1])


@pytest.mark.parametrize(
    ("values", "field", "explanation"),
    [
        ({"sink": {"kind": "kinesis"}}, "/sink/kind", "value must be one of 'kafka', 'redis'"),
        ({"replicaCount": 2}, "/replicaCount", "maximum: got 2, want 1"),
        ({"sink": {"kafka": {"bootstrapServers": ["kafka"]}}}, "/sink/kafka/bootstrapServers/0", "pattern"),
        ({"spool": {"persistance": {}}}, "/spool", "additional properties 'persistance' not allowed"),
    ],
)
def test_values_schema_rejects_a_bad_value_naming_the_field(
    chart: helm.Chart, values: dict[str, Any], field: str, explanation: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name="bridge", namespace="trading")
    message = str(caught.value)
    assert f"at '{field}'" in message and explanation in message, message


def test_ibeam_sidecar_without_its_login_secret_fails_with_a_clear_message(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match=re.escape("ibeam.enabled needs ibeam.existingSecret")):
        chart.render({"ibeam": {"enabled": True}}, name="bridge", namespace="trading")


# ------------------------------------------------------------------------------ what the chart promises


def test_default_install_is_a_statefulset_with_a_spool_claim(chart: helm.Chart) -> None:
    objects = render(chart, {})
    kinds = sorted(o["kind"] for o in objects.values())
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"]
    )
    statefulset = workload(objects)
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    mounts = {m["name"]: m["mountPath"] for m in container(objects, "bridge")["volumeMounts"]}
    assert mounts["spool"] == "/var/lib/ibkr-bridge"
    assert bridge_config(objects)["delivery"]["spool_dir"].startswith("/var/lib/ibkr-bridge/")


def test_without_persistence_it_is_a_deployment_that_never_overlaps_two_sessions(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["kafka"])
    deployment = workload(objects)
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["spool"]


def test_bridge_container_is_locked_down(chart: helm.Chart) -> None:
    objects = render(chart, {})
    pod = workload(objects)["spec"]["template"]["spec"]
    bridge = container(objects, "bridge")
    security = bridge["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert bridge["resources"]["requests"] and bridge["resources"]["limits"]


def test_probes_use_livez_and_readyz_on_the_admin_port(chart: helm.Chart) -> None:
    objects = render(chart, {})
    bridge = container(objects, "bridge")
    assert bridge["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert bridge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert bridge["ports"] == [{"name": "admin", "containerPort": 9464, "protocol": "TCP"}]
    service = objects["Service/bridge-ibkr-bridge"]
    assert service["spec"]["ports"][0]["targetPort"] == "admin"


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_bridge_config_is_accepted_by_the_bridge_with_the_pod_secrets_and_env(
    chart: helm.Chart, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's bridge.yaml, loaded by ``load_settings`` as the pod would load it.

    ``load_settings`` requires every ``*_file`` to exist. Each one must name a file of the pod's
    secrets volume; those files are recreated under tmp (same relative paths) and the paths
    rewritten to them, so the check covers both the config shape and its agreement with the
    mounts. The container's ``BRIDGE_*`` env (e.g. the SASL username from a secretKeyRef) is set
    with placeholder values, and nothing else of the test process's env leaks in.
    """
    objects = render(chart, VARIANTS[variant])
    config = bridge_config(objects)
    mounted = secret_files(objects)
    for key, path in file_keys(config).items():
        assert path in mounted, f"{variant}: {key} names {path}, which no secret is mounted at"
        local = tmp_path / "secrets" / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("placeholder\n")
        section = config
        for part in key.split(".")[:-1]:
            section = section[part]
        section[key.rsplit(".", 1)[-1]] = str(local)
    for name in [n for n in os.environ if n.upper().startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    for entry in container(objects, "bridge").get("env", []):
        if entry["name"].startswith("BRIDGE_"):
            monkeypatch.setenv(entry["name"], entry.get("value", "from-secret"))
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path)
    assert settings.admin.host == "0.0.0.0"
    assert settings.admin.port == container(objects, "bridge")["ports"][0]["containerPort"]
    mounts = {m["name"]: m["mountPath"] for m in container(objects, "bridge")["volumeMounts"]}
    assert settings.delivery.spool_dir.is_relative_to(mounts["spool"])


def test_a_bridge_config_file_naming_an_unmounted_secret_is_refused(chart: helm.Chart, tmp_path: Path) -> None:
    config = bridge_config(render(chart, VARIANTS["kafka"]))
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert any(p.startswith("admin.token_file: '/var/run/secrets/ibkr-bridge/admin/token") for p in caught.value.problems)
    assert any(p.startswith("sink.kafka.sasl_password_file:") for p in caught.value.problems)


def test_values_map_onto_the_bridge_settings(chart: helm.Chart) -> None:
    config = bridge_config(render(chart, VARIANTS["tuned"]))
    assert config["gateway"] == {"url": "https://ibkr-gateway:5000", "insecure_tls": False, "account": "U1234567"}
    assert config["session"] == {"stale_after_s": 20, "tickle_interval_s": 45, "smd_refresh_s": 300}
    assert config["sink"] == {
        "url": "kafka://kafka:9092",
        "kafka": {
            "compression": "zstd",
            "linger_ms": 0,
            "enable_idempotence": True,
            "tls": False,
            "create_topics": True,  # from extraConfig, over the rendered false
        },
    }
    assert config["logging"] == {"level": "INFO", "format": "auto"}
    assert config["subscriptions"]["market_data"] == {"conids": []}  # the bridge's default fields


def test_topic_creation_values_map_onto_the_kafka_sink_settings(chart: helm.Chart) -> None:
    kafka = bridge_config(render(chart, VARIANTS["topics"]))["sink"]["kafka"]
    assert (kafka["create_topics"], kafka["topic_partitions"], kafka["topic_replication"]) == (True, 12, 3)
    default = bridge_config(render(chart, {}))["sink"]["kafka"]
    assert default["create_topics"] is False
    assert "topic_partitions" not in default and "topic_replication" not in default


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"sink": {"kafka": {"topics": {"partitions": 0}}}}, "/sink/kafka/topics/partitions"),
        ({"sink": {"kafka": {"topics": {"replicas": 3}}}}, "/sink/kafka/topics"),
        ({"ibeam": {"image": {"tag": ""}}}, "/ibeam/image/tag"),
    ],
)
def test_topic_and_ibeam_values_are_checked_by_the_schema(chart: helm.Chart, values: dict[str, Any], field: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(f"at '{field}'")):
        chart.render(values, name="bridge", namespace="trading")


def test_the_ibeam_image_tag_is_the_one_the_user_chose(chart: helm.Chart) -> None:
    assert container(render(chart, VARIANTS["topics"]), "ibeam")["image"] == "voyz/ibeam:0.5.9"
    assert "your choice" in (CHART / "values.yaml").read_text().lower()


def test_kafka_variant_mounts_secrets_as_files_and_opens_only_broker_and_gateway_ports(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["kafka"])
    config = bridge_config(objects)
    assert config["sink"]["url"] == "kafka://kafka-0.kafka:9093,kafka-1.kafka:9094"
    kafka = config["sink"]["kafka"]
    assert (kafka["tls"], kafka["sasl_mechanism"]) == (True, "SCRAM-SHA-512")
    assert kafka["sasl_password_file"] == "/var/run/secrets/ibkr-bridge/kafka/password"
    assert config["admin"]["token_file"] == "/var/run/secrets/ibkr-bridge/admin/token"
    assert config["subscriptions"]["market_data"] == {
        "conids": [265598, "8314@SMART", "28812380;;;265598/1,8314/-1"], "fields": ["31", "84", "86"]}
    assert "redis" not in config["sink"]
    volumes = {v["name"]: v for v in workload(objects)["spec"]["template"]["spec"]["volumes"]}
    secrets = [s["secret"]["name"] for s in volumes["secrets"]["projected"]["sources"]]
    assert secrets == ["kafka-credentials", "bridge-admin"]
    assert secret_files(objects) == {
        "/var/run/secrets/ibkr-bridge/kafka/password",
        "/var/run/secrets/ibkr-bridge/admin/token",
    }
    username = {"secretKeyRef": {"name": "kafka-credentials", "key": "username"}}
    assert {"name": "BRIDGE_SINK__KAFKA__SASL_USERNAME", "valueFrom": username} in container(objects, "bridge")["env"]
    assert egress_ports(objects) == {53, 9093, 9094, 5000}
    assert not leaf_paths(config) & {".".join(path) for path in SECRET_KEYS}  # secret values never in YAML


def test_oauth_variant_mounts_the_key_set_from_its_secret_and_talks_to_the_web_api(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["oauth"])
    config = bridge_config(objects)
    assert config["gateway"] == {"mode": "oauth", "url": "https://api.ibkr.com", "compete": True,
                                 "oauth_file": "/var/run/secrets/ibkr-bridge/oauth/oauth.json"}  # fmt: skip
    assert secret_files(objects) == {f"/var/run/secrets/ibkr-bridge/oauth/{name}" for name in
                                     ("oauth.json", "private_signature.pem", "private_encryption.pem")}  # fmt: skip
    assert 443 in egress_ports(objects) and 5000 not in egress_ports(objects)
    assert not leaf_paths(config) & {".".join(path) for path in SECRET_KEYS}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"oauth": {"enabled": True}}}, "gateway.oauth.enabled needs gateway.oauth.existingSecret"),
        ({"gateway": {"oauth": {"enabled": True, "existingSecret": "s"}}, "ibeam": {"enabled": True,
          "existingSecret": "l"}}, "exclude each other"),
        ({"gateway": {"oauth": {"enabled": True, "existingSecret": "s", "files": ["key.pem"]}}}, "must list oauth.json"),
    ],
)
def test_oauth_values_that_cannot_work_fail_with_a_clear_message(chart: helm.Chart, values: dict[str, Any],
                                                                 message: str) -> None:  # fmt: skip
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(chart, values)


def test_redis_variant_configures_the_redis_sink_and_its_port(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["redis"])
    sink = bridge_config(objects)["sink"]
    assert sink == {
        "url": "rediss://redis.data:6380/2",
        "redis": {"maxlen_events": 1000000, "password_file": "/var/run/secrets/ibkr-bridge/redis/password"},
    }
    assert secret_files(objects) == {"/var/run/secrets/ibkr-bridge/redis/password"}
    assert egress_ports(objects) == {53, 6380, 5000}
    policy = objects["NetworkPolicy/bridge-ibkr-bridge"]
    broker_rule = next(r for r in policy["spec"]["egress"] if {"port": 6380, "protocol": "TCP"} in r["ports"])
    assert broker_rule["to"] == [{"podSelector": {"matchLabels": {"app": "redis"}}}]


def test_ibeam_sidecar_variant_runs_the_gateway_beside_the_bridge_with_its_allow_list(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["ibeam"])
    names = [c["name"] for c in workload(objects)["spec"]["template"]["spec"]["containers"]]
    assert names == ["bridge", "ibeam"]
    assert bridge_config(objects)["gateway"]["url"] == "https://localhost:5000"
    ibeam = container(objects, "ibeam")
    assert ibeam["envFrom"] == [{"secretRef": {"name": "ibeam-login"}}]
    assert {"name": "ibeam-inputs", "mountPath": "/srv/inputs", "readOnly": True} in ibeam["volumeMounts"]
    conf = yaml.safe_load(objects["ConfigMap/bridge-ibkr-bridge"]["data"]["conf.yaml"])
    assert conf["ips"]["allow"] == ["127.0.0.1", "10.42.*"]
    assert conf["listenPort"] == 5000
    assert 443 in egress_ports(objects)
    assert 5000 not in egress_ports(objects)  # the gateway is on loopback


def test_external_gateway_notes_tell_the_operator_about_the_allow_list(chart: helm.Chart) -> None:
    notes = chart.render({}, name="bridge", namespace="trading")["ibkr-bridge/templates/NOTES.txt"]
    assert "Access Denied" in notes and "ips.allow" in notes
    sidecar = chart.render(VARIANTS["ibeam"], name="bridge", namespace="trading")
    assert "Access Denied" not in sidecar["ibkr-bridge/templates/NOTES.txt"]


def test_servicemonitor_variant_scrapes_the_admin_port_and_ships_the_alert_rules(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["servicemonitor"])
    monitor = objects["ServiceMonitor/bridge-ibkr-bridge"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service_ports = {p["name"] for p in objects["Service/bridge-ibkr-bridge"]["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in service_ports
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    rules = objects["PrometheusRule/bridge-ibkr-bridge"]["spec"]
    assert rules == yaml.safe_load((ROOT / "deploy/prometheus/rules/ibkr-bridge.rules.yml").read_text())


def test_dashboard_configmap_carries_the_sidecar_label_and_the_shipped_dashboard(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["servicemonitor"])
    dashboard = objects["ConfigMap/bridge-ibkr-bridge-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "ibkr"
    shipped = (ROOT / "deploy/grafana/ibkr-bridge.json").read_text()
    assert json.loads(dashboard["data"]["ibkr-bridge.json"]) == json.loads(shipped)


def test_optional_objects_are_absent_by_default(chart: helm.Chart) -> None:
    kinds = {o["kind"] for o in render(chart, {}).values()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    off = render(chart, {"networkPolicy": {"enabled": False}, "podDisruptionBudget": {"enabled": False}})
    assert not {o["kind"] for o in off.values()} & {"NetworkPolicy", "PodDisruptionBudget"}


def test_readme_documents_every_value(chart: helm.Chart) -> None:
    readme = (CHART / "README.md").read_text()
    documented: set[str] = set()
    # a row names keys as `a.b.c`, then maybe ` / `a.x` or ` / `.d` (a sibling of a.b.c)
    for head, tail in re.findall(r"\| `([a-zA-Z][\w.]*)`((?: / `[\w.]+`)*)", readme):
        documented.add(head)
        parent = head.rsplit(".", 1)[0]
        for part in re.findall(r"`([\w.]+)`", tail):
            documented.add(f"{parent}{part}" if part.startswith(".") else part)
    undocumented = {
        path
        for path in leaf_paths(chart.values)
        if not any(path == key or path.startswith(key + ".") for key in documented)
    }
    assert len(documented) > 40
    assert undocumented == set()


# ------------------------------------------------------------------------------ gateway TLS and admin peers


def test_insecure_tls_for_a_gateway_off_loopback_fails_the_render_naming_the_ca_values(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match=re.escape("set gateway.ca.existingSecret or gateway.ca.existingConfigMap")):
        chart.render({"gateway": {"insecureTls": True}}, name="bridge", namespace="trading")


def test_the_ibeam_sidecar_on_loopback_is_reached_without_verification(chart: helm.Chart) -> None:
    assert bridge_config(render(chart, VARIANTS["ibeam"]))["gateway"]["insecure_tls"] is True


def test_a_gateway_ca_secret_is_mounted_and_named_as_the_bridge_ca_file(chart: helm.Chart) -> None:
    objects = render(chart, VARIANTS["gateway_ca"])
    gateway = bridge_config(objects)["gateway"]
    assert gateway["insecure_tls"] is False
    assert gateway["ca_file"] == "/var/run/ibkr-bridge/gateway-ca/ca.pem"
    assert gateway["ca_file"] in secret_files(objects)
    volumes = {v["name"]: v for v in workload(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["gateway-ca"]["secret"] == {"secretName": "ibeam-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}


@pytest.mark.parametrize("variant", ["default", "gateway_ca"])
def test_the_network_policy_admits_to_the_admin_port_only_the_named_peers(chart: helm.Chart, variant: str) -> None:
    objects = render(chart, VARIANTS[variant])
    (rule,) = objects["NetworkPolicy/bridge-ibkr-bridge"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
    expected = {"default": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                "gateway_ca": [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]}[variant]  # fmt: skip
    assert rule["from"] == expected


def test_an_empty_admin_peer_list_admits_nothing(chart: helm.Chart) -> None:
    objects = render(chart, {"networkPolicy": {"adminFrom": []}})
    assert objects["NetworkPolicy/bridge-ibkr-bridge"]["spec"]["ingress"] == []


# What a waiting record costs (tests/bench/bench_buffer_memory.py: 1.3 KB of Python allocations,
# 2.2 KB of RSS with tracemalloc's bookkeeping, per buffered quote; critical records are no
# larger) and the bridge's idle RSS (tests/fault/test_ping_flood.py: ~80 MB), with margin.
BYTES_PER_BUFFERED_RECORD = 2_500
IDLE_BRIDGE_BYTES = 100 << 20
MEMORY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def memory_bytes(quantity: str) -> int:
    for suffix, factor in MEMORY_UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


@pytest.mark.parametrize("variant", ["default", "tuned"])
def test_the_buffers_fit_the_memory_limit_with_headroom(chart: helm.Chart, variant: str) -> None:
    objects = render(chart, VARIANTS[variant])
    delivery = bridge_config(objects)["delivery"]
    limit = memory_bytes(container(objects, "bridge")["resources"]["limits"]["memory"])
    buffered = delivery["max_market_data_events"] + delivery["max_critical_events"]
    needed = IDLE_BRIDGE_BYTES + buffered * BYTES_PER_BUFFERED_RECORD
    assert needed <= 0.75 * limit, f"{buffered:,} buffered records need ~{needed >> 20} MiB of a {limit >> 20} MiB limit"
