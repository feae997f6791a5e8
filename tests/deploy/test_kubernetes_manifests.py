"""deploy/kubernetes: the manifests render, match the Kubernetes schemas, and are wired right.

Offline, without a cluster. Each overlay is rendered by the small kustomize below (the
subset the manifests use; anything else in a kustomization.yaml is an error, not
silently ignored), cross-checked against `kubectl kustomize` where a kubectl is on
PATH, validated with kubernetes-validate's bundled schemas in strict mode (unknown
fields fail), and then checked for what the schemas cannot see: probes on kbrec's and
Triton's real paths and ports, Services, the HPA, the PDB and network policies that
select the pods they mean to, the database URL from a Secret, Triton's GPU and its
read-only model repository. Every check is shown to fail on a broken copy.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
OVERLAYS = ("managed-postgres", "try-it")
# Files applied by hand, outside any overlay; validated all the same.
STANDALONE = ("overlays/managed-postgres/secret.example.yaml", "tools/model-loader.yaml")
# An older release that clusters on extended support still run, and the newest one
# kubernetes-validate bundles (its release number follows Kubernetes').
SCHEMA_VERSIONS = ("1.30", "1.37")

# The Secret with kbrec's database URL; managed-postgres expects it to exist already.
DB_SECRET = "kbrec-db"
# The Secret with kbrec's admin token (a file: KBREC_ADMIN_TOKEN_FILE); the same.
ADMIN_SECRET = "kbrec-admin"
# Knobs being added to `kbrec serve` by other work; a kbrec without them ignores them.
PENDING_KNOBS = {"workers"}
# Which probe checks which path, per container.
EXPECTED_PROBES = {
    "kbrec": {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"},
    "triton": {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    },
}

Doc = dict[str, Any]


# --- a small kustomize --------------------------------------------------------------


class KustomizeError(Exception):
    """A kustomization this renderer does not handle, or a broken one."""


SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
SUPPORTED_KEYS |= {"secretGenerator"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}
CLUSTER_SCOPED |= {"ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def yaml_documents(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def render(directory: Path) -> list[Doc]:
    """`kustomize build directory` for the keys in SUPPORTED_KEYS."""
    kustomization = yaml_documents(directory / "kustomization.yaml")[0]
    unsupported = set(kustomization) - SUPPORTED_KEYS
    if unsupported:
        raise KustomizeError(f"{directory}: unsupported kustomization keys {sorted(unsupported)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(render(path) if path.is_dir() else yaml_documents(path))
    docs.extend(generated_secret(spec) for spec in kustomization.get("secretGenerator", []))
    # kustomize's order of the built-in transformers: namespace, labels, images.
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for labels in kustomization.get("labels", []):
        add_labels(docs, labels)
    for image in kustomization.get("images", []):
        set_image(docs, image)
    return docs


def generated_secret(spec: Doc) -> Doc:
    if set(spec) - {"name", "literals", "options"}:
        raise KustomizeError(f"secretGenerator {spec.get('name')}: only name, literals, options")
    # With the hash suffix, kustomize would also rename every reference to the Secret.
    if spec.get("options") != {"disableNameSuffixHash": True}:
        raise KustomizeError(f"secretGenerator {spec['name']}: needs disableNameSuffixHash")
    data = {}
    for literal in spec["literals"]:
        key, _, value = literal.partition("=")
        data[key] = base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": spec["name"]},
        "type": "Opaque",
        "data": data,
    }


def add_labels(docs: list[Doc], labels: Doc) -> None:
    if set(labels) - {"pairs", "includeTemplates"}:
        raise KustomizeError(f"labels: only pairs and includeTemplates, not {sorted(labels)}")
    pairs = labels["pairs"]
    for doc in docs:
        doc["metadata"].setdefault("labels", {}).update(pairs)
        if doc["kind"] == "StatefulSet":  # kustomize labels the claims it creates too
            for claim in doc["spec"].get("volumeClaimTemplates", []):
                claim["metadata"].setdefault("labels", {}).update(pairs)
        if labels.get("includeTemplates") and doc["kind"] in WORKLOADS:
            doc["spec"]["template"]["metadata"].setdefault("labels", {}).update(pairs)


def image_name(image: str) -> str:
    """The name part of an image reference: no digest, no tag (a registry port stays)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def set_image(docs: list[Doc], image: Doc) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise KustomizeError(f"images: only name, newName, newTag, not {sorted(image)}")
    for _, spec, _ in pod_templates(docs):
        for container in containers(spec):
            if image_name(container["image"]) == image["name"]:
                tag = image.get("newTag")
                name = image.get("newName", image["name"])
                container["image"] = f"{name}:{tag}" if tag else name


# --- views of the rendered documents --------------------------------------------------


def pod_templates(docs: list[Doc]) -> Iterator[tuple[Doc, Doc, dict[str, str]]]:
    """(owner, pod spec, pod labels) of every workload template and bare Pod."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            template = doc["spec"]["template"]
            yield doc, template["spec"], template["metadata"].get("labels", {})
        elif doc["kind"] == "Pod":
            yield doc, doc["spec"], doc["metadata"].get("labels", {})


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next(
        (d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name),
        None,
    )


def workload_container(docs: list[Doc], kind: str, name: str) -> Doc:
    workload = find(docs, kind, name)
    assert workload is not None, f"no {kind} {name}"
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """Whether matchLabels `selector` picks pods labelled `labels` (empty picks all)."""
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def match_labels(selector: Doc, where: str) -> dict[str, str]:
    # matchExpressions would need a real evaluator; the manifests do not use them.
    if set(selector) - {"matchLabels"}:
        raise AssertionError(f"{where}: only matchLabels selectors are checked")
    return selector.get("matchLabels", {})


def container_port(spec: Doc, port: int | str) -> int | None:
    """The number of the container port named or numbered `port` in the pod, if any."""
    for container in spec["containers"]:
        for declared in container.get("ports", []):
            if port in (declared.get("name"), declared["containerPort"]):
                return declared["containerPort"]
    return None


def secret_value(docs: list[Doc], name: str, key: str) -> str | None:
    secret = find(docs, "Secret", name)
    if secret is None:
        return None
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    if key in secret.get("data", {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def flag_value(args: list[str], flag: str) -> str | None:
    prefix = f"{flag}="
    return next((arg[len(prefix) :] for arg in args if arg.startswith(prefix)), None)


def dockerfile_base_image() -> str:
    text = (REPO_ROOT / "Dockerfile.gpu").read_text(encoding="utf-8")
    match = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert match, "Dockerfile.gpu has no FROM line"
    return match.group(1)


# --- the properties -------------------------------------------------------------------


def check_selectors(docs: list[Doc]) -> list[str]:
    out = []
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            name = f"{doc['kind']} {doc['metadata']['name']}"
            selector = match_labels(doc["spec"]["selector"], name)
            labels = doc["spec"]["template"]["metadata"].get("labels", {})
            if not selector or not selects(selector, labels):
                out.append(f"{name}: selector {selector} does not match its pod labels {labels}")
    return out


def check_probes(docs: list[Doc]) -> list[str]:
    out = []
    for owner, spec, _ in pod_templates(docs):
        if owner["kind"] == "Pod":
            continue
        for container in spec["containers"]:
            where = f"{owner['kind']} {owner['metadata']['name']} container {container['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    out.append(f"{where}: no {probe}")
                    continue
                http = container[probe].get("httpGet")
                if http and container_port(spec, http["port"]) is None:
                    out.append(f"{where}: {probe} port {http['port']} is not a container port")
            if owner["kind"] == "Deployment" and container["name"] not in EXPECTED_PROBES:
                out.append(f"{where}: no expected probe paths known for this container")
            for probe, path in EXPECTED_PROBES.get(container["name"], {}).items():
                http = container.get(probe, {}).get("httpGet")
                if http is None or http.get("path") != path:
                    out.append(f"{where}: {probe} must be an HTTP GET of {path}")
    return out


def check_probe_ports(docs: list[Doc]) -> list[str]:
    """The probes reach the port each server is told to listen on."""
    out = []
    kbrec = workload_container(docs, "Deployment", "kbrec")
    kbrec_spec = find(docs, "Deployment", "kbrec")["spec"]["template"]["spec"]
    listens = int(env_of(kbrec).get("KBREC_PORT", {}).get("value", 8000))
    triton = workload_container(docs, "Deployment", "triton")
    triton_spec = find(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    triton_http = int(flag_value(triton.get("args", []), "--http-port") or 8000)
    for container, spec, port in ((kbrec, kbrec_spec, listens), (triton, triton_spec, triton_http)):
        for probe in EXPECTED_PROBES[container["name"]]:
            http = container.get(probe, {}).get("httpGet", {})
            if container_port(spec, http.get("port", -1)) != port:
                out.append(f"{container['name']}: {probe} is not on the HTTP port {port}")
    return out


def check_resources(docs: list[Doc]) -> list[str]:
    out = []
    for owner, spec, _ in pod_templates(docs):
        for container in containers(spec):
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        out.append(
                            f"{owner['metadata']['name']}/{container['name']}: "
                            f"no {resource} in resources.{section}"
                        )
    return out


def check_security(docs: list[Doc]) -> list[str]:
    out = []
    for owner, spec, _ in pod_templates(docs):
        pod = spec.get("securityContext", {})
        name = owner["metadata"]["name"]
        if spec.get("automountServiceAccountToken") is not False:
            out.append(f"{name}: mounts a service account token it does not need")
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            context = container.get("securityContext", {})
            if not context.get("runAsNonRoot", pod.get("runAsNonRoot")):
                out.append(f"{where}: runAsNonRoot not set")
            seccomp = context.get("seccompProfile", pod.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                out.append(f"{where}: seccomp profile is not RuntimeDefault")
            if context.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation is not false")
            if context.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: root filesystem is not read-only")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                out.append(f"{where}: capabilities do not drop ALL")
    return out


def check_secrets(docs: list[Doc], external: Collection[str]) -> list[str]:
    """Credentials come from Secrets that exist (or are expected to: `external`)."""
    out = []
    for owner, spec, _ in pod_templates(docs):
        for container in containers(spec):
            for entry in container.get("env", []):
                where = f"{owner['metadata']['name']}/{container['name']} env {entry['name']}"
                if "postgresql://" in str(entry.get("value", "")):
                    out.append(f"{where}: a database URL in plain text")
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                missing = ref and secret_value(docs, ref["name"], ref["key"]) is None
                if missing and ref["name"] not in external:
                    out.append(f"{where}: Secret {ref['name']} key {ref['key']} is missing")
    kbrec = workload_container(docs, "Deployment", "kbrec")
    ref = env_of(kbrec).get("KBREC_DB", {}).get("valueFrom", {}).get("secretKeyRef")
    if ref is None:
        out.append("kbrec: KBREC_DB does not come from a Secret (secretKeyRef)")
    elif ref["name"] != DB_SECRET:
        out.append(f"kbrec: KBREC_DB comes from Secret {ref['name']}, not {DB_SECRET}")
    return out + check_admin_token(docs, external)


def check_admin_token(docs: list[Doc], external: Collection[str]) -> list[str]:
    """kbrec listens on 0.0.0.0, which it refuses without an admin token: a file of a
    Secret volume, named by KBREC_ADMIN_TOKEN_FILE."""
    kbrec = workload_container(docs, "Deployment", "kbrec")
    spec = find(docs, "Deployment", "kbrec")["spec"]["template"]["spec"]
    path = env_of(kbrec).get("KBREC_ADMIN_TOKEN_FILE", {}).get("value", "")
    folder, _, key = path.rpartition("/")
    mount = next((m for m in kbrec.get("volumeMounts", []) if m["mountPath"] == folder), None)
    volume = mount and next((v for v in spec["volumes"] if v["name"] == mount["name"]), None)
    secret = (volume or {}).get("secret")
    if not path or secret is None:
        return ["kbrec: KBREC_ADMIN_TOKEN_FILE is no file of a Secret volume (no admin token)"]
    name = secret["secretName"]
    if name not in external and secret_value(docs, name, key) is None:
        return [f"kbrec: Secret {name} key {key} (the admin token) is missing"]
    return []


def check_triton(docs: list[Doc]) -> list[str]:
    out = []
    triton = find(docs, "Deployment", "triton")
    spec = triton["spec"]["template"]["spec"]
    container = workload_container(docs, "Deployment", "triton")
    if str(container["resources"].get("limits", {}).get("nvidia.com/gpu")) != "1":
        out.append("triton: does not request one GPU (limits nvidia.com/gpu: 1)")
    if not spec.get("nodeSelector"):
        out.append("triton: no nodeSelector for GPU nodes")
    if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
        out.append("triton: does not tolerate the nvidia.com/gpu taint")
    if container["image"] != dockerfile_base_image():
        out.append(f"triton: image {container['image']} is not {dockerfile_base_image()}")
    if triton["spec"].get("replicas") != 1:
        out.append("triton: kbrec's model control reaches one Triton; replicas must be 1")
    args = container.get("args", [])
    for flag, value in (("--model-control-mode", "explicit"), ("--load-model", "encoder")):
        if flag_value(args, flag) != value:
            out.append(f"triton: not started with {flag}={value}")
    repository = flag_value(args, "--model-repository")
    mount = next((m for m in container["volumeMounts"] if m["mountPath"] == repository), None)
    if mount is None:
        out.append(f"triton: nothing mounted at its --model-repository {repository}")
        return out
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    claim = volume.get("persistentVolumeClaim", {})
    if mount.get("readOnly") is not True or claim.get("readOnly") is not True:
        out.append("triton: the model repository is not mounted read-only")
    if find(docs, "PersistentVolumeClaim", claim.get("claimName", "")) is None:
        out.append(f"triton: no PersistentVolumeClaim {claim.get('claimName')}")
    return out


def check_kbrec(docs: list[Doc]) -> list[str]:
    """kbrec's wiring: listening outside the pod, Triton reachable, Triton's repository."""
    out = []
    container = workload_container(docs, "Deployment", "kbrec")
    spec = find(docs, "Deployment", "kbrec")["spec"]["template"]["spec"]
    env = env_of(container)
    if env.get("KBREC_HOST", {}).get("value") != "0.0.0.0":
        out.append("kbrec: KBREC_HOST is not 0.0.0.0 (it would listen on loopback)")
    url = urlsplit(env.get("KBREC_TRITON_URL", {}).get("value", ""))
    service = find(docs, "Service", url.hostname or "")
    triton = find(docs, "Deployment", "triton")
    if url.scheme != "grpc" or service is None or triton is None:
        out.append(f"kbrec: KBREC_TRITON_URL {url.geturl()!r} names no Triton Service")
    else:
        template = triton["spec"]["template"]
        triton_args = template["spec"]["containers"][0].get("args", [])
        grpc_port = int(flag_value(triton_args, "--grpc-port") or 8001)
        ports = service["spec"]["ports"]
        target = next((p["targetPort"] for p in ports if p["port"] == url.port), None)
        reached = container_port(template["spec"], target) if target is not None else None
        if not selects(service["spec"]["selector"], template["metadata"]["labels"]):
            out.append(f"kbrec: Service {url.hostname} does not select the Triton pods")
        elif reached != grpc_port:
            out.append(f"kbrec: {url.geturl()} does not reach Triton's gRPC port {grpc_port}")
    repository = env.get("KBREC_REPOSITORY", {}).get("value")
    mount = next((m for m in container["volumeMounts"] if m["mountPath"] == repository), None)
    if mount is None or mount.get("readOnly") is not True:
        out.append(f"kbrec: KBREC_REPOSITORY {repository} is not a read-only mount")
    else:
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        triton_volumes = triton["spec"]["template"]["spec"]["volumes"] if triton else []
        claims = {v.get("persistentVolumeClaim", {}).get("claimName") for v in triton_volumes}
        if volume.get("persistentVolumeClaim", {}).get("claimName") not in claims - {None}:
            out.append("kbrec: its repository is not the claim Triton serves from")
    return out


def unknown_settings(docs: list[Doc]) -> list[str]:
    """KBREC_* variables `kbrec serve` does not know (it would ignore a misspelt one)."""
    # Imported here: only this check needs kbrec's code, the rest reads YAML.
    from server.settings import KNOBS

    names = env_of(workload_container(docs, "Deployment", "kbrec"))
    return [
        f"kbrec: {name} is no `kbrec serve` setting"
        for name in names
        if name.startswith("KBREC_")
        and name.removeprefix("KBREC_").lower() not in {*KNOBS, *PENDING_KNOBS}
    ]


def check_services(docs: list[Doc]) -> list[str]:
    out = []
    templates = [(spec, labels) for owner, spec, labels in pod_templates(docs)]
    for service in (d for d in docs if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        picked = [
            spec for spec, labels in templates if selects(service["spec"]["selector"], labels)
        ]
        if not service["spec"].get("selector") or not picked:
            out.append(f"Service {name}: selects no pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for spec in picked:
                if container_port(spec, target) is None:
                    out.append(f"Service {name}: port {port['port']} → {target}, no such port")
    return out


def check_hpa(docs: list[Doc]) -> list[str]:
    out = []
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = find(docs, ref["kind"], ref["name"])
        if target is None or ref["kind"] != "Deployment" or ref["name"] != "kbrec":
            out.append(f"HPA {hpa['metadata']['name']}: targets {ref['kind']} {ref['name']}")
            continue
        cpu = [
            m
            for m in hpa["spec"].get("metrics", [])
            if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
        ]
        if not cpu or cpu[0]["resource"]["target"]["type"] != "Utilization":
            out.append(f"HPA {hpa['metadata']['name']}: no CPU utilisation target")
        for container in target["spec"]["template"]["spec"]["containers"]:
            if "cpu" not in container.get("resources", {}).get("requests", {}):
                out.append(f"HPA: {container['name']} has no CPU request to scale by")
        if hpa["spec"].get("minReplicas", 1) < 2:
            out.append("HPA: fewer than 2 replicas leaves no room for the PDB")
    if not any(d["kind"] == "HorizontalPodAutoscaler" for d in docs):
        out.append("no HorizontalPodAutoscaler")
    return out


def check_pdb(docs: list[Doc]) -> list[str]:
    out = []
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    if not pdbs:
        out.append("no PodDisruptionBudget")
    for pdb in pdbs:
        name = pdb["metadata"]["name"]
        selector = match_labels(pdb["spec"]["selector"], f"PDB {name}")
        picked = {
            o["metadata"]["name"] for o, _, lab in pod_templates(docs) if selects(selector, lab)
        }
        if picked != {"kbrec"}:
            out.append(f"PDB {name}: selects {sorted(picked)}, not the kbrec pods")
    return out


def check_topology_spread(docs: list[Doc]) -> list[str]:
    out = []
    for owner, spec, labels in pod_templates(docs):
        for constraint in spec.get("topologySpreadConstraints", []):
            selector = match_labels(constraint["labelSelector"], owner["metadata"]["name"])
            if not selects(selector, labels):
                out.append(f"{owner['metadata']['name']}: topology spread selects other pods")
    deployment = find(docs, "Deployment", "kbrec")
    if not deployment["spec"]["template"]["spec"].get("topologySpreadConstraints"):
        out.append("kbrec: no topology spread constraints")
    return out


def check_network_policies(docs: list[Doc]) -> list[str]:
    out = []
    templates = list(pod_templates(docs))
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        name = policy["metadata"]["name"]
        selector = match_labels(policy["spec"]["podSelector"], f"NetworkPolicy {name}")
        guarded = [spec for _, spec, labels in templates if selects(selector, labels)]
        if not guarded:
            out.append(f"NetworkPolicy {name}: guards no pods")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                peers = match_labels(peer["podSelector"], f"NetworkPolicy {name}")
                if not any(selects(peers, labels) for _, _, labels in templates):
                    out.append(f"NetworkPolicy {name}: lets in pods that do not exist {peers}")
            for port in rule.get("ports", []):
                if any(container_port(spec, port["port"]) is None for spec in guarded):
                    out.append(f"NetworkPolicy {name}: port {port['port']} is no container port")
    return out


def check_volumes(docs: list[Doc]) -> list[str]:
    out = []
    for owner, spec, _ in pod_templates(docs):
        claims = {c["metadata"]["name"] for c in owner["spec"].get("volumeClaimTemplates", [])}
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in claims and not find(docs, "PersistentVolumeClaim", claim):
                out.append(f"{owner['metadata']['name']}: no PersistentVolumeClaim {claim}")
        declared = {v["name"] for v in spec.get("volumes", [])} | claims
        for container in containers(spec):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in declared:
                    out.append(f"{owner['metadata']['name']}: mounts undeclared {mount['name']}")
    for statefulset in (d for d in docs if d["kind"] == "StatefulSet"):
        service = find(docs, "Service", statefulset["spec"]["serviceName"])
        if service is None or service["spec"].get("clusterIP") != "None":
            out.append(f"StatefulSet {statefulset['metadata']['name']}: no headless Service")
    return out


def check_namespace(docs: list[Doc]) -> list[str]:
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in CLUSTER_SCOPED}
    return [] if namespaces == {"kbrec"} else [f"resources in namespaces {namespaces}"]


def problems(docs: list[Doc], external_secrets: Collection[str] = ()) -> list[str]:
    return [
        *check_namespace(docs),
        *check_selectors(docs),
        *check_probes(docs),
        *check_probe_ports(docs),
        *check_resources(docs),
        *check_security(docs),
        *check_secrets(docs, external_secrets),
        *check_triton(docs),
        *check_kbrec(docs),
        *check_services(docs),
        *check_hpa(docs),
        *check_pdb(docs),
        *check_topology_spread(docs),
        *check_network_policies(docs),
        *check_volumes(docs),
    ]


# --- the tests --------------------------------------------------------------------------


def rendered(overlay: str, root: Path = KUBERNETES) -> list[Doc]:
    return render(root / "overlays" / overlay)


def secrets_made_elsewhere(overlay: str) -> set[str]:
    # managed-postgres: the Secrets are created by hand (secret.example.yaml, kustomization)
    return {DB_SECRET, ADMIN_SECRET} if overlay == "managed-postgres" else set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_wired_right(overlay):
    assert problems(rendered(overlay), secrets_made_elsewhere(overlay)) == []


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("source", [*OVERLAYS, *STANDALONE])
def test_documents_match_the_kubernetes_schemas(source, version):
    docs = rendered(source) if source in OVERLAYS else yaml_documents(KUBERNETES / source)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_overlays_differ_only_in_the_database():
    managed = {(d["kind"], d["metadata"]["name"]) for d in rendered("managed-postgres")}
    try_it = {(d["kind"], d["metadata"]["name"]) for d in rendered("try-it")}
    assert try_it - managed == {
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("NetworkPolicy", "postgres"),
        ("Secret", DB_SECRET),
        ("Secret", ADMIN_SECRET),  # the trial's admin token
    }
    assert managed <= try_it


def test_try_it_database_url_matches_the_postgres_it_deploys():
    docs = rendered("try-it")
    url = urlsplit(secret_value(docs, DB_SECRET, "url"))
    postgres = workload_container(docs, "StatefulSet", "postgres")
    env = env_of(postgres)
    service = find(docs, "Service", url.hostname)
    assert service is not None
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.path == "/" + env["POSTGRES_DB"]["value"]
    ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert url.password == secret_value(docs, ref["name"], ref["key"])
    assert postgres["image"].rsplit(":", 1)[-1].split(".")[0] == "15"


def test_secret_example_has_the_name_and_key_kbrec_reads():
    (secret,) = yaml_documents(KUBERNETES / STANDALONE[0])
    kbrec = workload_container(rendered("managed-postgres"), "Deployment", "kbrec")
    ref = env_of(kbrec)["KBREC_DB"]["valueFrom"]["secretKeyRef"]
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (ref["name"], "kbrec")
    assert urlsplit(secret["stringData"][ref["key"]]).scheme == "postgresql"
    overlay = KUBERNETES / "overlays" / "managed-postgres"
    (kustomization,) = yaml_documents(overlay / "kustomization.yaml")
    assert "secret.example.yaml" not in kustomization["resources"]


def test_kbrec_settings_are_known():
    docs = rendered("try-it")
    assert unknown_settings(docs) == []
    set_env(kbrec_container(docs), "KBREC_TRITON_URI", {"value": "grpc://triton:8001"})
    assert unknown_settings(docs) == ["kbrec: KBREC_TRITON_URI is no `kbrec serve` setting"]


def test_model_loader_writes_where_the_servers_read():
    (loader,) = yaml_documents(KUBERNETES / STANDALONE[1])
    docs = rendered("try-it")
    (mount,) = loader["spec"]["containers"][0]["volumeMounts"]
    (volume,) = loader["spec"]["volumes"]
    assert mount.get("readOnly") is not True
    assert find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert mount["mountPath"] == flag_value(triton_container(docs)["args"], "--model-repository")
    assert loader["metadata"]["namespace"] == "kbrec"


def kubectl_kustomize(directory: Path) -> list[Doc]:
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(directory)]
    else:
        pytest.skip("neither kubectl nor kustomize on PATH")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_identity(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    out = {}
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "Secret":  # kustomize wraps long base64 lines
            doc["data"] = {k: base64.b64decode(v) for k, v in doc.get("data", {}).items()}
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        out[key] = doc
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kustomize(overlay):
    directory = KUBERNETES / "overlays" / overlay
    assert by_identity(render(directory)) == by_identity(kubectl_kustomize(directory))


def test_renderer_rejects_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches:\n  - path: p.yaml\n")
    with pytest.raises(KustomizeError, match="patches"):
        render(tmp_path)


# Each mutation breaks one property; the checks must notice.
Mutation = Callable[[list[Doc]], None]


def kbrec_container(docs: list[Doc]) -> Doc:
    return workload_container(docs, "Deployment", "kbrec")


def triton_container(docs: list[Doc]) -> Doc:
    return workload_container(docs, "Deployment", "triton")


def set_env(container: Doc, name: str, entry: Doc) -> None:
    container["env"] = [e for e in container["env"] if e["name"] != name] + [
        {"name": name, **entry}
    ]


MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "no readiness probe": (
        lambda d: kbrec_container(d).pop("readinessProbe"),
        "container kbrec: no readinessProbe",
    ),
    "liveness on /readyz": (
        lambda d: kbrec_container(d)["livenessProbe"]["httpGet"].update(path="/readyz"),
        "livenessProbe must be an HTTP GET of /healthz",
    ),
    "probe on another port": (
        lambda d: triton_container(d)["readinessProbe"]["httpGet"].update(port="grpc"),
        "triton: readinessProbe is not on the HTTP port 8000",
    ),
    "no memory limit": (
        lambda d: triton_container(d)["resources"]["limits"].pop("memory"),
        "triton/triton: no memory in resources.limits",
    ),
    "database URL in plain text": (
        lambda d: set_env(kbrec_container(d), "KBREC_DB", {"value": "postgresql://u:p@h/db"}),
        "KBREC_DB does not come from a Secret",
    ),
    "no GPU": (
        lambda d: triton_container(d)["resources"]["limits"].pop("nvidia.com/gpu"),
        "does not request one GPU",
    ),
    "repository writable": (
        lambda d: triton_container(d)["volumeMounts"][0].update(readOnly=False),
        "triton: the model repository is not mounted read-only",
    ),
    "poll mode": (
        lambda d: triton_container(d)["args"].__setitem__(2, "--model-control-mode=poll"),
        "not started with --model-control-mode=explicit",
    ),
    "HPA on another target": (
        lambda d: find(d, "HorizontalPodAutoscaler", "kbrec")["spec"]["scaleTargetRef"].update(
            name="triton"
        ),
        "HPA kbrec: targets Deployment triton",
    ),
    "PDB selects Triton": (
        lambda d: find(d, "PodDisruptionBudget", "kbrec")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "triton"}
        ),
        "PDB kbrec: selects [], not the kbrec pods",
    ),
    "selector drifts from labels": (
        lambda d: find(d, "Deployment", "kbrec")["spec"]["template"]["metadata"]["labels"].update(
            {"app.kubernetes.io/component": "web"}
        ),
        "Deployment kbrec: selector",
    ),
    "Service port to nowhere": (
        lambda d: find(d, "Service", "triton")["spec"]["ports"][1].update(targetPort=9001),
        "does not reach Triton's gRPC port 8001",
    ),
    "runs as root": (
        lambda d: find(d, "StatefulSet", "postgres")["spec"]["template"]["spec"][
            "securityContext"
        ].pop("runAsNonRoot"),
        "postgres/postgres: runAsNonRoot not set",
    ),
    "missing Secret key": (
        lambda d: find(d, "Secret", DB_SECRET)["data"].pop("password"),
        "Secret kbrec-db key password is missing",
    ),
    "no admin token": (
        lambda d: kbrec_container(d)["env"].remove(
            next(e for e in kbrec_container(d)["env"] if e["name"] == "KBREC_ADMIN_TOKEN_FILE")
        ),
        "KBREC_ADMIN_TOKEN_FILE is no file of a Secret volume",
    ),
    "admin token missing from its Secret": (
        lambda d: find(d, "Secret", ADMIN_SECRET)["data"].pop("token"),
        "Secret kbrec-admin key token (the admin token) is missing",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_fail_on_a_broken_copy(mutation):
    mutate, expected = MUTATIONS[mutation]
    docs = copy.deepcopy(rendered("try-it"))
    mutate(docs)
    found = problems(docs)
    assert any(expected in problem for problem in found), found


def test_a_broken_file_fails_the_checks(tmp_path):
    """The same, through the files: a copy of the tree with one probe path changed."""
    root = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, root)
    manifest = root / "base" / "kbrec.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert text.count("path: /readyz") == 1
    manifest.write_text(text.replace("path: /readyz", "path: /ready"), encoding="utf-8")
    assert problems(rendered("try-it", root)) == [
        "Deployment kbrec container kbrec: readinessProbe must be an HTTP GET of /readyz"
    ]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda spec: spec.update(replica=3), id="unknown field"),
        pytest.param(lambda spec: spec.update(replicas="3"), id="wrong type"),
    ],
)
def test_schema_validation_fails_on_a_broken_copy(mutate):
    deployment = copy.deepcopy(find(rendered("try-it"), "Deployment", "kbrec"))
    mutate(deployment["spec"])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[0], strict=True)
