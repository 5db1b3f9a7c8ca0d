"""The official Python client's streaming calls against r8s: exec, attach and port-forward over
its WebSocket (v4.channel.k8s.io), with the boolean query parameters it sends ("True").
Usage: python3 streams.py KUBECONFIG HTTPD_POD TICKER_POD. Exits non-zero on the first failed
check; prints "python streams ok" at the end."""
import socket
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
httpd, ticker = sys.argv[2], sys.argv[3]

# exec: stdout and stderr together, as the client returns them.
out = stream(api.connect_get_namespaced_pod_exec, httpd, "default",
             command=["sh", "-c", "echo out; echo err >&2"], stderr=True, stdin=False, stdout=True, tty=False)
assert sorted(out.split()) == ["err", "out"], repr(out)

print("exec ok", flush=True)
# exec: the exit code, read from the error channel's Status.
resp = stream(api.connect_get_namespaced_pod_exec, httpd, "default", command=["sh", "-c", "echo bye; exit 3"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=30)
assert resp.returncode == 3, resp.returncode
assert resp.read_stdout() == "bye\n"
resp.close()
ok = stream(api.connect_get_namespaced_pod_exec, httpd, "default", command=["true"],
            stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
ok.run_forever(timeout=30)
assert ok.returncode == 0, ok.returncode
ok.close()

print("exit codes ok", flush=True)
# exec with stdin.
resp = stream(api.connect_get_namespaced_pod_exec, httpd, "default", command=["sh", "-c", "head -n1"],
              stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
resp.write_stdin("typed-in\n")
seen = ""
while resp.is_open() and "typed-in" not in seen:
    resp.update(timeout=5)
    seen += resp.read_stdout(timeout=1)
assert seen == "typed-in\n", repr(seen)
resp.close()

print("stdin ok", flush=True)
# attach: what the container prints from now on.
resp = stream(api.connect_get_namespaced_pod_attach, ticker, "default", stderr=True, stdin=False, stdout=True, tty=False,
              _preload_content=False)
seen = ""
for _ in range(50):
    resp.update(timeout=1)
    seen += resp.read_stdout(timeout=1)
    if "tick-" in seen:
        break
assert "tick-" in seen, repr(seen)
resp.close()

print("attach ok", flush=True)
# port-forward: two ports on one WebSocket; 80 answers, 81 reports its error.
pf = portforward(api.connect_get_namespaced_pod_portforward, httpd, "default", ports="80,81")
s = pf.socket(80)
s.setblocking(True)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
assert data.startswith(b"HTTP/1.") and data.endswith(b"forwarded-page\n"), data
s.close()
print("port 80 ok", flush=True)
refused = pf.socket(81)
refused.setblocking(True)
refused.settimeout(30)
try:
    refused.sendall(b"x")
    rest = refused.recv(10)
except (OSError, socket.timeout):
    rest = b""
assert rest == b"", rest
err = pf.error(81)
assert err is not None and "81" in err, err
print("python streams ok")
