"""deploy/Dockerfile built and run for real, without a container engine.

The base is Debian bookworm (``debootstrap --variant=minbase``) with Python 3.11 from apt,
imported with ``podman import`` (``deploy/image/base.sh``, cached between runs); the image is
built with ``buildah bud --isolation chroot`` and its entrypoint run with ``buildah run
--isolation chroot`` (no namespaces: the container shares the host's loopback, where the
simulator listens). Run with::

    .venv/bin/python -m pytest -m image tests/image -p no:cacheprovider -s

Needs root, debootstrap, buildah and podman; Debian's mirror and the package index reachable.
Behind a TLS-intercepting proxy, ``PIP_CERT`` names the CA bundle pip needs: it is handed to
the build as the ``pip_cert`` secret, and the test checks it did not end up in the image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fixtures.processes import free_port, require_binary, stop_process, wait_for_port
from tests.fixtures.sim import SimProcess

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
BASE_SCRIPT = ROOT / "deploy/image/base.sh"
IMAGE = "localhost/ibkr-bridge:image-test"
SPOOL = "/var/lib/ibkr-bridge"
# World-writable scratch directories every Debian root has; the bridge writes none of them
# (the run below shows that nothing outside the spool volume is written at all).
SCRATCH = {"/tmp", "/var/tmp", "/run/lock", "/dev/shm", "/var/lock"}


@dataclass(frozen=True)
class BuiltImage:
    name: str
    build_s: float
    size_bytes: int
    config: dict[str, Any]  # Docker-format config: Entrypoint, Cmd, User, Healthcheck, ...


def run(*argv: str, timeout_s: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    for tool, why in (("debootstrap", "makes the Debian base"), ("podman", "imports the base"),
                      ("buildah", "builds and runs the image")):  # fmt: skip
        require_binary(tool, why)
    base = run(str(BASE_SCRIPT), timeout_s=1800).stdout.strip().splitlines()[-1]
    argv = ["buildah", "bud", "--isolation", "chroot", "--format", "docker", "--layers=false",
            "--build-arg", f"PYTHON_IMAGE={base}", "-f", "deploy/Dockerfile", "-t", IMAGE]  # fmt: skip
    cert = os.environ.get("PIP_CERT")
    if cert:
        argv += ["--secret", f"id=pip_cert,src={cert}"]
    started = time.monotonic()
    run(*argv, str(ROOT), timeout_s=1800)
    build_s = time.monotonic() - started
    inspect = json.loads(run("buildah", "inspect", "--type", "image", IMAGE).stdout)
    size = int(json.loads(run("podman", "image", "inspect", IMAGE).stdout)[0]["Size"])
    built = BuiltImage(IMAGE, build_s, size, inspect["Docker"]["config"])
    print(f"\nimage {IMAGE}: built in {build_s:.0f} s from {base}, {size / 1e6:.0f} MB")
    yield built
    run("podman", "rmi", "--force", IMAGE, check=False)


@pytest.fixture
def container(image: BuiltImage) -> Iterator[str]:
    name = run("buildah", "from", "--name", f"ibkr-bridge-test-{os.getpid()}", image.name).stdout.strip()
    yield name
    run("buildah", "rm", name, check=False)


def in_container(container: str, *argv: str, env: dict[str, str] | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
    return run("buildah", "run", "--isolation", "chroot", *flags, container, "--", *argv, timeout_s=120,
               check=check)  # fmt: skip


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_ready(url: str, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    status = 0
    while time.monotonic() < deadline:
        try:
            status = get(url)
        except OSError:
            status = 0
        if status == 200:
            return status
        time.sleep(0.5)
    return status


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, real uid) of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            uid_line = next(line for line in (Path("/proc") / str(child) / "status").read_text().splitlines()
                            if line.startswith("Uid:"))  # fmt: skip
        except (OSError, StopIteration):
            continue
        found.append((child, int(uid_line.split()[1])))
        todo += children.get(child, [])
    return found


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def spool_volume(tmp_path: Path) -> Path:
    volume = tmp_path / "spool-volume"
    volume.mkdir()
    os.chown(volume, 10001, 10001)  # what a volume mounted for the image's user looks like
    return volume


def test_image_serves_the_simulator_as_its_non_root_user_writing_only_the_spool(
    image: BuiltImage, container: str, sim_process_factory: Callable[..., SimProcess], spool_volume: Path,
    tmp_path: Path,
) -> None:
    ca_dir = tmp_path / "gateway-ca"  # mounted where the image's config names gateway.ca_file, as in compose
    sim_process = sim_process_factory("--tls-dir", str(ca_dir))
    ca_dir.chmod(0o755)
    (ca_dir / "cert.pem").chmod(0o644)
    port = free_port()
    env = {  # the image's own config file, pointed at the loopback simulator
        "BRIDGE_GATEWAY__URL": sim_process.origin,
        "BRIDGE_SINK__URL": "stdout://",
        "BRIDGE_ADMIN__HOST": "127.0.0.1",
        "BRIDGE_ADMIN__PORT": str(port),
        "BRIDGE_SESSION__RECONNECT_CAP_S": "1",
    }
    entrypoint = [*image.config["Entrypoint"], *image.config["Cmd"]]
    flags = [f"--env={key}={value}" for key, value in env.items()]
    argv = ["buildah", "run", "--isolation", "chroot", *flags, "--volume", f"{spool_volume}:{SPOOL}",
            "--volume", f"{ca_dir}:/etc/ibkr-bridge/gateway-ca:ro", container, "--", *entrypoint]  # fmt: skip
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log_file:
        bridge = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        wait_for_port(port, bridge, timeout_s=60)
        assert wait_ready(f"http://127.0.0.1:{port}/readyz") == 200

        healthcheck = image.config["Healthcheck"]["Test"]
        assert healthcheck[0] == "CMD"
        assert in_container(container, *healthcheck[1:], env=env, check=False).returncode == 0

        served_by = {pid: uid for pid, uid in descendants(bridge.pid)
                     if cmdline(pid).startswith(b"/opt/venv/bin/python") and b"ibkr-bridge" in cmdline(pid)}  # fmt: skip
        assert len(served_by) == 1 and set(served_by.values()) == {10001}, served_by
        # SIGTERM to the bridge itself, as a container runtime signals its entrypoint (buildah
        # answers a signal of its own with SIGKILL): it drains and exits 0.
        os.kill(next(iter(served_by)), signal.SIGTERM)
        bridge.wait(60)
    finally:
        stop_process(bridge)
    assert bridge.returncode == 0, log_path.read_text(errors="replace")[-3000:]

    # The spool lives on the volume, written by the image's user ...
    spool = spool_volume / "spool"
    assert spool.is_dir() and spool.stat().st_uid == 10001
    # ... and nothing else was written: the container's own layer holds no file at all.
    mount = Path(run("buildah", "mount", container).stdout.strip())
    try:
        upper = mount.parent / "diff"
        written = [str(p.relative_to(upper)) for p in upper.rglob("*") if not p.is_dir()]
        assert written == []
    finally:
        run("buildah", "umount", container, check=False)


def test_only_the_spool_volume_is_writable_for_the_images_user(image: BuiltImage, container: str) -> None:
    assert image.config["User"] == "10001:10001"
    assert image.config["Volumes"] == {SPOOL: {}}
    # find exits 1 over the directories it may not read; what it printed is the answer.
    found = in_container(container, "find", "/", "-xdev", "-writable", "-not", "-type", "l", "-prune",
                         check=False).stdout  # fmt: skip
    writable = set(found.split()) - SCRATCH
    assert writable == {SPOOL}


def test_image_holds_the_bridge_and_its_runtime_dependencies_only(image: BuiltImage, container: str) -> None:
    listing = in_container(container, "python", "-c", (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.requires or [] for d in m.distributions()}))"
    )).stdout  # fmt: skip
    installed = {canonicalize_name(name): requires for name, requires in json.loads(listing).items()}
    wanted: set[str] = set()
    todo = ["ibkr-bridge"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in wanted:
            continue
        wanted.add(name)
        for spec in installed.get(name, []):
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    assert set(installed) == wanted, {"extra": set(installed) - wanted, "missing": wanted - set(installed)}
    tools = in_container(container, "sh", "-c", "command -v pip gcc cc make git || true").stdout.split()
    assert tools == []
    assert in_container(container, "test", "-e", "/src", check=False).returncode != 0


def test_the_pip_certificate_secret_stays_out_of_the_image(image: BuiltImage, container: str) -> None:
    assert in_container(container, "sh", "-c", "ls -A /run/secrets 2>/dev/null || true").stdout.strip() == ""
    cert = os.environ.get("PIP_CERT")
    if not cert:
        return  # built without the secret: nothing that could leak
    image_bundle = in_container(container, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    host_only = [block for block in _pem_blocks(Path(cert).read_text()) if block not in image_bundle]
    mount = Path(run("buildah", "mount", container).stdout.strip())
    try:
        for block in host_only[:3]:  # certificates only the build host's bundle has (the proxy's)
            line = block.splitlines()[2]
            found = run("grep", "-rlF", "--", line, str(mount), check=False, timeout_s=300)
            assert found.stdout == "", found.stdout
    finally:
        run("buildah", "umount", container, check=False)


def _pem_blocks(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        current.append(line)
        if line.startswith("-----END"):
            blocks.append("\n".join(current))
            current = []
    return [block[block.index("-----BEGIN"):] for block in blocks if "-----BEGIN" in block]
