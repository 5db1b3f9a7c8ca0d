"""The official Python client (kubernetes==32.*) against r8s: the issue's flows.
Usage: python3 client_flows.py KUBECONFIG. Exits non-zero on the first failed check."""
import sys, threading

from kubernetes import client, config, dynamic, watch

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = sorted(ns.metadata.name for ns in core.list_namespace().items)
assert names == ["default", "kube-node-lease", "kube-public", "kube-system"], names

dep = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "py-nginx", "labels": {"app": "py-nginx"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "py-nginx"}},
             "template": {"metadata": {"labels": {"app": "py-nginx"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx:1.21.1", "ports": [{"containerPort": 80}]}]}}},
}
created = apps.create_namespaced_deployment("default", dep)
assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy
assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

# Strategic merge patch (the client's default for dicts) and the scale subresource.
apps.patch_namespaced_deployment("py-nginx", "default", {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.22.0"}]}}}})
scale = apps.patch_namespaced_deployment_scale("py-nginx", "default", {"spec": {"replicas": 3}})
assert scale.spec.replicas == 3, scale
got = apps.read_namespaced_deployment("py-nginx", "default")
assert got.spec.replicas == 3 and got.spec.template.spec.containers[0].image == "nginx:1.22.0"

# Label selectors and a watch that sees a later create.
events = []
def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, "default", label_selector="app=py", timeout_seconds=20):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "py-pod":
            w.stop()
t = threading.Thread(target=watcher)
t.start()
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py-pod", "labels": {"app": "py"}},
       "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "300"]}]}}
core.create_namespaced_pod("default", pod)
t.join(30)
assert ("ADDED", "py-pod") in events, events
assert [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=py").items] == ["py-pod"]
assert core.list_namespaced_pod("default", field_selector="status.phase=Pending").items[0].metadata.name == "py-pod"

# Service with NodePort allocation.
svc = core.create_namespaced_service("default", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "py-svc"},
    "spec": {"type": "NodePort", "selector": {"app": "py-nginx"}, "ports": [{"port": 80, "targetPort": 80}]}})
assert 30000 <= svc.spec.ports[0].node_port <= 32767 and svc.spec.cluster_ip.startswith("10.")

# Errors come back as ApiException with upstream's codes.
try:
    core.create_namespaced_config_map("default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})
    raise SystemExit("invalid name accepted")
except client.exceptions.ApiException as e:
    assert e.status == 422, e.status
try:
    apps.read_namespaced_deployment("ghost", "default")
    raise SystemExit("ghost found")
except client.exceptions.ApiException as e:
    assert e.status == 404, e.status
    # upstream's Status, byte for byte: Go's field order and the encoder's newline.
    assert e.body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                      '"message":"deployments.apps \\"ghost\\" not found","reason":"NotFound",'
                      '"details":{"name":"ghost","group":"apps","kind":"deployments"},"code":404}\n'), repr(e.body)

# A CRD, waited for as installers wait (a watch until Established), then a custom object.
ext = client.ApiextensionsV1Api()
ext.create_custom_resource_definition({
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "pythings.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "pythings", "kind": "PyThing"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
established = False
w = watch.Watch()
for ev in w.stream(ext.list_custom_resource_definition, field_selector="metadata.name=pythings.example.com", timeout_seconds=30):
    conds = ev["object"].status.conditions or []
    if any(c.type == "Established" and c.status == "True" for c in conds):
        established = True
        w.stop()
assert established, "the CRD never became Established"
custom = client.CustomObjectsApi()
custom.create_namespaced_custom_object("example.com", "v1", "default", "pythings",
                                       {"apiVersion": "example.com/v1", "kind": "PyThing", "metadata": {"name": "one"}, "spec": {"n": 1}})
assert custom.get_namespaced_custom_object("example.com", "v1", "default", "pythings", "one")["spec"] == {"n": 1}

# Server-side apply as field manager "kubectl" over what client-side apply left (the
# last-applied annotation and a kubectl-client-side-apply entry): the unchanged fields are taken
# without a conflict; another manager still conflicts.
last = '{"apiVersion":"v1","data":{"a":"1","b":"keep"},"kind":"ConfigMap","metadata":{"annotations":{},"name":"py-csa","namespace":"default"}}\n'
core.create_namespaced_config_map("default", {"apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "py-csa", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last}},
    "data": {"a": "1", "b": "keep"}}, field_manager="kubectl-client-side-apply")
cms = dynamic.DynamicClient(client.ApiClient()).resources.get(api_version="v1", kind="ConfigMap")
applied = cms.server_side_apply(body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-csa"}, "data": {"a": "2", "b": "keep"}},
                                namespace="default", field_manager="kubectl")
assert applied.data["a"] == "2", applied.data
try:
    cms.server_side_apply(body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-csa"}, "data": {"a": "3"}},
                          namespace="default", field_manager="tool")
    raise SystemExit("another manager took kubectl's field without a conflict")
except dynamic.exceptions.ConflictError as e:
    assert e.status == 409, e.status

apps.delete_namespaced_deployment("py-nginx", "default")
core.delete_namespaced_service("py-svc", "default")
assert [d.metadata.name for d in apps.list_namespaced_deployment("default").items] == []
print("python client flows ok")
