"""The image of envs/Dockerfile runs the pipeline to the same bytes as the project's venv.

No image registry is reachable and containers cannot be started here (`podman run` needs
cgroups), so the test builds what a registry would have given: a Debian bookworm base made by
debootstrap and imported into podman; builds envs/Dockerfile on it with chroot isolation, pip
inside reading the host's pip configuration (mounted read-only) so torch comes from this
machine's wheels; then runs a small grid with `snakemake` inside the image's filesystem
(a chroot with /proc and /dev bound, the image's environment applied, as a container runtime
would) and the same grid in this venv, and compares the weights byte for byte.

Slow, run by `pytest -m slow`: about 4 minutes here (debootstrap 75 s, the build 140 s, the
two grids 28 s).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, copy_project, snakemake, write_config
from reprogrid.record import provenance

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("podman") and shutil.which("debootstrap")),
        reason="needs root, podman and debootstrap (apt-get install podman debootstrap)",
    ),
]

MIRROR = "http://deb.debian.org/debian"
BASE = "localhost/reprogrid-test-base"
IMAGE = "localhost/reprogrid-test"
# Where the host's pip reads its configuration; whichever exist are mounted into the build.
PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip", str(Path.home() / ".config/pip"))
CONFIG_KEYS_WITH_PATHS = ("find-links", "extra-index-url", "index-url", "constraint", "cert")
RUNS = ("arch=mlp/lr=0.003/seed=0", "arch=cnn/lr=0.003/seed=0")


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `command`, failing the test with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{shlex.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def pip_mounts() -> list[str]:
    """podman `--volume` arguments that show the build the host's pip configuration and the
    local folders it names (wheel folders, file:// indexes, constraints), read-only."""
    paths = [path for path in PIP_CONFIG_FILES if Path(path).exists()]
    listed = run(sys.executable, "-m", "pip", "config", "list").stdout
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.rsplit(".", 1)[-1] in CONFIG_KEYS_WITH_PATHS:
            for item in value.strip("'\"").split():
                path = item.removeprefix("file://")
                if path.startswith("/") and Path(path).exists():
                    paths.append(path)
    # A file:// index names its files relative to itself: mount the folder above it too.
    paths += [str(Path(p).parent) for p in paths if p.rstrip("/").endswith("/simple")]
    home = str(Path.home())
    volumes = []
    for path in sorted(set(paths)):
        if any(Path(path).is_relative_to(other) and path != other for other in paths):
            continue  # inside a folder mounted already
        inside = path.replace(home, "/root", 1) if path.startswith(home) else path
        volumes += ["--volume", f"{path}:{inside}:ro"]
    return volumes


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """The image built from envs/Dockerfile on a debootstrapped Debian base: its name, digest,
    environment and build seconds; removed after the module."""
    work = tmp_path_factory.mktemp("image")
    root = work / "base"
    started = time.monotonic()
    run(
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates",
        "bookworm",
        str(root),
        MIRROR,
    )
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    run("podman", "import", "-", BASE, stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(root)
    based = time.monotonic()
    run(
        "podman",
        "build",
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE={BASE}",
        "--build-arg",
        f"IMAGE={IMAGE}",
        "--build-arg",
        "EXTRAS=",
        *pip_mounts(),
        "--file",
        str(REPO / "envs/Dockerfile"),
        "--tag",
        IMAGE,
        str(REPO),
    )
    built = time.monotonic()
    inspected = json.loads(run("podman", "image", "inspect", IMAGE).stdout)[0]
    yield {
        "name": IMAGE,
        "digest": inspected["Digest"],
        "env": dict(item.split("=", 1) for item in inspected["Config"]["Env"]),
        "seconds": {"base": based - started, "build": built - based},
    }
    subprocess.run(["podman", "rmi", "--force", IMAGE, BASE], capture_output=True)


def in_image(image: dict, root: Path, folder: Path, command: str) -> subprocess.CompletedProcess:
    """Run `command` in `folder` inside the filesystem `root` of a container of `image`: a
    chroot with /proc and /dev bound, in a private mount namespace that ends with it, and the
    image's environment, as a container runtime sets it."""
    env = {**image["env"], "HOME": "/root"}
    inner = f"cd {shlex.quote(str(folder))} && {command}"
    script = (
        f"mount --bind /proc {root}/proc && mount --rbind /dev {root}/dev && "
        f"exec chroot {root} /usr/bin/env -i "
        + " ".join(shlex.quote(f"{key}={value}") for key, value in env.items())
        + f" /bin/sh -c {shlex.quote(inner)}"
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
    )


def test_a_grid_in_the_image_gives_the_venvs_bytes_and_says_it_ran_there(image, tmp_path, raw_dir):
    config = {
        "experiment": "image",
        "data": {"raw_dir": str(raw_dir), "verify": False},
        "grid": {"seed": [0], "arch": ["mlp", "cnn"], "lr": [0.003]},
        "train": {"epochs": 1, "batch_size": 64},
    }
    here = copy_project(tmp_path / "venv")
    snakemake(here, "--cores", "2", "--configfile", str(write_config(here, config)))

    container = run("podman", "create", IMAGE, "true").stdout.strip()
    try:
        root = Path(run("podman", "mount", container).stdout.strip())
        inside = root / str(tmp_path).lstrip("/")
        copy_project(inside / "image")
        shutil.copytree(raw_dir, root / str(raw_dir).lstrip("/"))
        write_config(inside / "image", config)
        result = in_image(
            image, root, tmp_path / "image", "snakemake --cores 2 --configfile test.yaml"
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

        for name in RUNS:
            ours = here / "results/image/runs" / name / "model.pt"
            theirs = inside / "image/results/image/runs" / name / "model.pt"
            assert theirs.read_bytes() == ours.read_bytes(), name
        record = provenance.read(inside / "image/results/image/runs" / RUNS[0] / "provenance.json")
        mine = provenance.read(here / "results/image/runs" / RUNS[0] / "provenance.json")
    finally:
        subprocess.run(["podman", "umount", container], capture_output=True)
        subprocess.run(["podman", "rm", "--force", container], capture_output=True)

    assert record.image == record.env["REPROGRID_IMAGE"] == IMAGE
    assert mine.image is None
    assert record.torch_version == mine.torch_version
    print(f"image built in {image['seconds']}")
