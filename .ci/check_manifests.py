#!/usr/bin/env python3
"""Checks examples/kubernetes/*.yaml: every document parses, and the ports,
probe paths, drain timing and Secret keys agree with the portcullis.toml in
the ConfigMap. Needs PyYAML (the CI venv has it); tomllib is Python >= 3.11.

    python3 .ci/check_manifests.py [DIR]
"""
import glob
import os
import sys
import tomllib

import yaml

DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "examples", "kubernetes")
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


docs = []
for path in sorted(glob.glob(os.path.join(DIR, "*.yaml"))):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc is None:
                continue
            check("apiVersion" in doc and "kind" in doc and "metadata" in doc,
                  f"{path}: document without apiVersion/kind/metadata")
            docs.append((path, doc))
by_kind = {}
for path, doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)
for kind in ["ConfigMap", "Secret", "Deployment", "Service", "ServiceMonitor"]:
    check(kind in by_kind, f"no {kind}")
if errors:
    sys.exit("\n".join(errors))

cm = by_kind["ConfigMap"][0]
conf = tomllib.loads(cm["data"]["portcullis.toml"])
proxy_port = port_of(conf["proxy"]["listen"])
admin_port = port_of(conf["admin"]["listen"])
upstream_host, upstream_port = conf["upstream"]["address"].rsplit(":", 1)
grace = conf.get("server", {}).get("grace_period_seconds", 10)
shutdown = conf.get("server", {}).get("graceful_shutdown_timeout_seconds", 5)
check(upstream_host in ("127.0.0.1", "localhost", "[::1]"),
      f"upstream {conf['upstream']['address']} is not loopback")

dep = by_kind["Deployment"][0]
pod = dep["spec"]["template"]
spec = pod["spec"]
containers = {c["name"]: c for c in spec["containers"]}
check("portcullis" in containers, "no container named portcullis")
side = containers["portcullis"]
apps = [c for n, c in containers.items() if n != "portcullis"]
check(len(apps) >= 1, "no application container beside the sidecar")

named = {p["name"]: p["containerPort"] for p in side.get("ports", [])}
check(named.get("proxy") == proxy_port, f"sidecar port proxy={named.get('proxy')} != proxy.listen {proxy_port}")
check(named.get("admin") == admin_port, f"sidecar port admin={named.get('admin')} != admin.listen {admin_port}")


def resolve(port):
    return named.get(port, port) if isinstance(port, str) else port


for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
    p = side.get(probe, {}).get("httpGet", {})
    check(p.get("path") == path, f"{probe} path {p.get('path')} != {path}")
    check(resolve(p.get("port")) == admin_port, f"{probe} port {p.get('port')} is not the admin port {admin_port}")
if "startupProbe" in side:
    check(resolve(side["startupProbe"]["httpGet"]["port"]) == admin_port, "startupProbe not on the admin port")

# the application listens on loopback, on the upstream port
for app in apps:
    env = {e["name"]: e.get("value") for e in app.get("env", [])}
    check(env.get("HOST") == "127.0.0.1", f"app {app['name']} HOST is not 127.0.0.1")
    check(env.get("PORT") == upstream_port, f"app {app['name']} PORT {env.get('PORT')} != upstream port {upstream_port}")
    check(not app.get("ports"), f"app {app['name']} exposes container ports; only the sidecar should")

# drain: preStop + grace period + shutdown timeout fit in the termination grace
pre = side.get("lifecycle", {}).get("preStop", {})
pre_sleep = pre.get("sleep", {}).get("seconds", 0)
tgps = spec.get("terminationGracePeriodSeconds", 30)
check(pre, "no preStop hook on the sidecar")
check(tgps >= pre_sleep + grace + shutdown,
      f"terminationGracePeriodSeconds {tgps} < preStop {pre_sleep} + grace {grace} + shutdown {shutdown}")

for c in spec["containers"]:
    check(c.get("resources", {}).get("requests"), f"container {c['name']} has no resource requests")

ann = pod["metadata"].get("annotations", {})
check(ann.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
check(int(ann.get("prometheus.io/port", 0)) == admin_port, "prometheus.io/port is not the admin port")
check(ann.get("prometheus.io/path", "/metrics") == "/metrics", "prometheus.io/path is not /metrics")

# the Service sends traffic to the sidecar, never to the app directly
svc = by_kind["Service"][0]
svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
for p in svc["spec"]["ports"]:
    check(resolve(p["targetPort"]) in (proxy_port, admin_port),
          f"Service port {p['name']} targets {p['targetPort']}, not the sidecar")
check(any(resolve(p["targetPort"]) == proxy_port for p in svc["spec"]["ports"]), "Service does not target the proxy port")
check(svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), "Service selector does not match the pod")

sm = by_kind["ServiceMonitor"][0]
for ep in sm["spec"]["endpoints"]:
    sp = svc_ports.get(ep["port"])
    check(sp is not None and resolve(sp["targetPort"]) == admin_port,
          f"ServiceMonitor port {ep['port']} does not reach the admin port")
    check(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor path is not /metrics")
check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
      "ServiceMonitor selector does not match the Service")

# Secret keys referenced by the pod exist; secret files named in the config are mounted
secret = by_kind["Secret"][0]
skeys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
for e in side.get("env", []):
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if ref:
        check(ref["name"] == secret["metadata"]["name"], f"env {e['name']} names Secret {ref['name']}")
        check(ref["key"] in skeys, f"env {e['name']}: key {ref['key']} not in the Secret")
check(any(e["name"] == "PORTCULLIS_DATABASE__URL" for e in side.get("env", [])), "no PORTCULLIS_DATABASE__URL from the Secret")
mounts = {m["name"]: m["mountPath"] for m in side.get("volumeMounts", [])}
vols = {v["name"]: v for v in spec["volumes"]}
for section, key in [("jwt", "private_key_file"), ("secrets", "encryption_key_file")]:
    f = conf.get(section, {}).get(key, "")
    if not f:
        continue
    ok = False
    for name, mp in mounts.items():
        v = vols.get(name, {})
        if "secret" in v and f.startswith(mp.rstrip("/") + "/"):
            rel = f[len(mp.rstrip("/")) + 1:]
            items = v["secret"].get("items")
            paths = {i["path"]: i["key"] for i in items} if items else {k: k for k in skeys}
            ok = rel in paths and paths[rel] in skeys
    check(ok, f"{section}.{key} = {f} is not a mounted key of the Secret")
cfg_mount = [m for m in side.get("volumeMounts", []) if vols.get(m["name"], {}).get("configMap")]
config_arg = (side.get("args") or ["", ""])[-1]
check(any(config_arg in (m["mountPath"], m["mountPath"].rstrip("/") + "/portcullis.toml") for m in cfg_mount),
      f"the ConfigMap is not mounted where --config points ({config_arg})")

# the binary agrees the ConfigMap's file is valid (when it is built)
binary = os.environ.get("PORTCULLIS_BIN") or os.path.join(os.path.dirname(__file__), "..", "target", "release", "portcullis")
if os.path.exists(binary):
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(cm["data"]["portcullis.toml"])
        f.flush()
        r = subprocess.run([binary, "config", "check", "--config", f.name], capture_output=True, text=True)
        check(r.returncode == 0, f"portcullis config check refuses the ConfigMap: {r.stderr.strip()}")

if errors:
    sys.exit("manifest check failed:\n  " + "\n  ".join(errors))
print(f"manifests: {len(docs)} documents in {os.path.normpath(DIR)} agree with the ConfigMap "
      f"(proxy {proxy_port}, admin {admin_port}, upstream 127.0.0.1:{upstream_port}, drain {pre_sleep}+{grace}+{shutdown} <= {tgps}s)")
