"""Export to W&B (offline) and MLflow (a real local server), run by Snakemake for real.

The MLflow server is started here on a free loopback port and stopped at the end; W&B runs
offline (no account, no network) and its run files are read back with W&B's own record
classes. Fake credentials sit in the environment and in a git remote; none may leak.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_refused, copy_project, write_config
from mlflow_server import free_port
from mlflow_server import running as mlflow_running
from reprogrid import tracking
from reprogrid.commands import cli
from reprogrid.record import damage

pytest.importorskip("mlflow")
pytest.importorskip("wandb")

from mlflow.tracking import MlflowClient
from wandb.proto import wandb_internal_pb2

BIN = Path(sys.executable).parent
EXPERIMENT = "tracked"
SECRETS = {
    "WANDB_API_KEY": "wandbkey" + "7" * 32,
    "GITHUB_TOKEN": "ghp_FAKEtokenFAKEtokenFAKEtoken1234",
    "AWS_SECRET_ACCESS_KEY": "awsSECRETfake/abcdefghij0123456789KLMN",
    "MLFLOW_TRACKING_PASSWORD": "mlflowPASSWORDfake42",
}
REMOTE_TOKEN = "ghp_REMOTEtokenInTheGitRemote99"


def run_snakemake(folder: Path, *args: str, env: dict | None = None, check: bool = True):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
    )
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on a free loopback port: (URL, its store folder)."""
    store = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_running(store) as url:
        yield url, store


def tracked_config(raw_dir: Path, mlflow_uri: str | None, **tracking_overrides) -> dict:
    """Two seeds of one setting, two epochs each; both trackers on, W&B offline."""
    settings = {
        "wandb": {"enabled": True, "mode": "offline", "project": "reprogrid-test"},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_uri},
        **tracking_overrides,
    }
    return {
        "experiment": EXPERIMENT,
        "data": {"raw_dir": str(raw_dir), "verify": False},
        "grid": {"seed": [0, 1], "arch": ["mlp"], "lr": [0.003]},
        "train": {"epochs": 2, "batch_size": 64},
        "analysis": {"criterion": None},
        "tracking": settings,
    }


def secret_env() -> dict:
    env = {**os.environ, **SECRETS}
    env.pop("WANDB_PROJECT", None)
    # Nothing may go out: an attempt to reach W&B would fail at once, not hang.
    env["WANDB_BASE_URL"] = "http://127.0.0.1:9"
    return env


def file_digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, raw_dir, mlflow_server):
    """A git checkout with a token in its remote, trained, then exported by the default target.

    Returns the project folder and the digests of the run files right after training.
    """
    folder = copy_project(tmp_path_factory.mktemp("tracked") / "project")
    write_config(folder, tracked_config(raw_dir, mlflow_server[0]))
    git = ["git", "-C", str(folder), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "project"], check=True)
    remote = f"https://x-access-token:{REMOTE_TOKEN}@github.com/lab/reprogrid.git"
    subprocess.run([*git, "remote", "add", "origin", remote], check=True)
    env = secret_env()
    run_snakemake(folder, "--cores", "2", "--configfile", "test.yaml", "--until", "train", env=env)
    trained = file_digests(folder / "results" / EXPERIMENT / "runs")
    run_snakemake(folder, "--cores", "2", "--configfile", "test.yaml", env=env)
    return folder, trained


def grid_runs(folder: Path) -> list[Path]:
    return sorted(
        path.parent for path in (folder / "results" / EXPERIMENT / "runs").rglob("metrics.json")
    )


def active_runs(url: str) -> list:
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id])


def assert_mlflow_matches(url: str, folder: Path) -> dict[str, str]:
    """One active MLflow run per grid run, its params and every metric history exact."""
    client = MlflowClient(tracking_uri=url)
    runs = active_runs(url)
    by_key = {run.data.tags[tracking.KEY_TAG]: run for run in runs}
    assert len(runs) == len(by_key) == len(grid_runs(folder)) == 2
    for run_dir in grid_runs(folder):
        facts = tracking.run_facts(run_dir)
        mlflow_run = by_key[f"{EXPERIMENT}:{facts.run}"]
        params = mlflow_run.data.params
        assert {name: params[name] for name in ("seed", "arch", "lr")} == {
            "seed": str(facts.train["seed"]),
            "arch": facts.train["arch"],
            "lr": json.dumps(facts.train["lr"]),
        }
        assert params["train.epochs"] == "2" and params["train.batch_size"] == "64"
        assert params["data.val_fraction"] == "0.1"
        assert mlflow_run.data.tags["mlflow.source.git.commit"] == facts.commit
        assert mlflow_run.data.tags["reprogrid.setting"] == "arch=mlp/lr=0.003"
        assert mlflow_run.data.tags["axis.seed"] == str(facts.train["seed"])
        columns, history = damage.read_history(run_dir / "history.csv")
        assert len(history) == 2
        for column in columns:
            logged = client.get_metric_history(mlflow_run.info.run_id, column)
            assert sorted((m.step, m.value) for m in logged) == [
                (int(row["epoch"]), row[column]) for row in history
            ], column
        final = json.loads((run_dir / "metrics.json").read_text())
        assert mlflow_run.data.metrics["final/test_acc"] == final["test_acc"]
        assert mlflow_run.data.tags["reprogrid.status"] == final["status"] == "ok"
        artifacts = {item.path for item in client.list_artifacts(mlflow_run.info.run_id)}
        assert "provenance.json" in artifacts
        assert "model.pt" not in artifacts
    return {key: run.info.run_id for key, run in by_key.items()}


def wandb_records(path: Path) -> list:
    """The records of a W&B run file: its LevelDB-style log (32 KiB blocks of chunks behind
    a 7-byte W&B header), each record one protobuf `Record` of wandb's own schema."""
    data = path.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            position += left - 7 - length
        elif kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending + chunk))
            pending = b""
        else:
            pending += chunk
    return records


def wandb_history(path: Path) -> tuple[dict, list[tuple[int, dict[str, float]]]]:
    """The run record and the (step, values) history rows of a W&B run file."""
    run_record, rows = None, []
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_record = record.run
        elif kind == "history":
            values = {
                "/".join(item.nested_key) or item.key: json.loads(item.value_json)
                for item in record.history.item
            }
            rows.append((record.history.step.num, values))
    return run_record, rows


# --- MLflow ----------------------------------------------------------------------------------


@pytest.mark.workflow
def test_mlflow_server_holds_each_run_with_its_exact_history(tracked, mlflow_server):
    folder, _ = tracked
    ids = assert_mlflow_matches(mlflow_server[0], folder)
    record = json.loads((folder / f"results/{EXPERIMENT}/tracking/mlflow.json").read_text())
    assert {f"{EXPERIMENT}:{run}": run_id for run, run_id in record["runs"].items()} == ids


@pytest.mark.workflow
def test_export_alters_no_run_file(tracked):
    folder, trained = tracked
    assert file_digests(folder / "results" / EXPERIMENT / "runs") == trained


# --- W&B offline -----------------------------------------------------------------------------


@pytest.mark.workflow
def test_wandb_offline_run_per_grid_run_matches_history(tracked):
    folder, _ = tracked
    offline = sorted((folder / f"results/{EXPERIMENT}/tracking/wandb").glob("offline-run-*"))
    assert len(offline) == 2
    for run_dir in grid_runs(folder):
        facts = tracking.run_facts(run_dir)
        run_id = tracking.wandb_run_id(EXPERIMENT, facts.run)
        files = list(
            (folder / f"results/{EXPERIMENT}/tracking/wandb").glob(
                f"offline-run-*/run-{run_id}.wandb"
            )
        )
        assert len(files) == 1
        run_record, rows = wandb_history(files[0])
        assert run_record.run_id == run_id
        assert run_record.project == "reprogrid-test"
        assert run_record.run_group == "arch=mlp/lr=0.003"
        assert run_record.display_name == facts.run
        assert {"arch=mlp", "lr=0.003", f"seed={facts.train['seed']}"} <= set(run_record.tags)
        columns, history = damage.read_history(run_dir / "history.csv")
        assert [step for step, _ in rows] == [int(row["epoch"]) for row in history]
        for (_, logged), row in zip(rows, history, strict=True):
            assert {column: logged[column] for column in columns} == row


@pytest.mark.workflow
def test_sync_names_every_offline_run(tracked, capsys, monkeypatch):
    folder, _ = tracked
    monkeypatch.chdir(folder)
    assert cli.main(["sync", f"results/{EXPERIMENT}", "--dry-run"]) == 0
    command = capsys.readouterr().out
    assert "-m wandb sync" in command
    assert command.count("offline-run-") == 2
    assert cli.main(["sync", "results/none"]) == 2
    assert capsys.readouterr().err.startswith("reprogrid: no offline W&B runs")


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.workflow
def test_no_credential_reaches_any_file_written(tracked, mlflow_server):
    folder, _ = tracked
    places = [folder / part for part in ("results", "logs", "reports", ".snakemake")]
    places.append(mlflow_server[1])
    secrets = [value.encode() for value in [*SECRETS.values(), REMOTE_TOKEN]]
    checked = 0
    for place in places:
        for path in place.rglob("*"):
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                checked += 1
                for secret in secrets:
                    assert secret not in content, f"{secret!r} leaked into {path}"
    assert checked > 50


# --- failures of the export never touch the runs -------------------------------------------


@pytest.mark.workflow
def test_unreachable_mlflow_fails_the_export_job_only(tracked, raw_dir):
    folder, trained = tracked
    dead = f"http://127.0.0.1:{free_port()}"
    write_config(folder, tracked_config(raw_dir, dead), "dead.yaml")
    result = run_snakemake(
        folder, "--cores", "2", "--configfile", "dead.yaml", env=secret_env(), check=False
    )
    assert result.returncode != 0
    log = (folder / f"logs/{EXPERIMENT}/track_mlflow.log").read_text()
    lines = [line for line in log.splitlines() if "reprogrid:" in line]
    assert len(lines) == 1, log
    assert "cannot reach the MLflow server" in lines[0] and dead in lines[0]
    assert "Traceback" not in log
    assert "train" not in job_counts(result)
    assert file_digests(folder / "results" / EXPERIMENT / "runs") == trained


# --- idempotence -----------------------------------------------------------------------------


@pytest.mark.workflow
def test_export_again_and_forceall_keep_one_tracker_run_per_grid_run(tracked, mlflow_server):
    folder, _ = tracked
    url = mlflow_server[0]
    before = assert_mlflow_matches(url, folder)
    for record in (folder / f"results/{EXPERIMENT}/tracking").glob("*.json"):
        record.unlink()
    env = secret_env()
    run_snakemake(folder, "--cores", "2", "--configfile", "test.yaml", env=env)
    assert assert_mlflow_matches(url, folder) == before  # unchanged runs stay as they are
    run_snakemake(folder, "--cores", "2", "--configfile", "test.yaml", "--forceall", env=env)
    after = assert_mlflow_matches(url, folder)  # recomputed: replaced, never duplicated
    assert after.keys() == before.keys()
    offline = list((folder / f"results/{EXPERIMENT}/tracking/wandb").glob("offline-run-*"))
    assert len(offline) == 2
    for run_dir in grid_runs(folder):
        run_id = tracking.wandb_run_id(EXPERIMENT, tracking.run_facts(run_dir).run)
        (wandb_file,) = (folder / f"results/{EXPERIMENT}/tracking/wandb").glob(
            f"offline-run-*/run-{run_id}.wandb"
        )
        _, rows = wandb_history(wandb_file)
        _, history = damage.read_history(run_dir / "history.csv")
        assert [values["epoch_seconds"] for _, values in rows] == [
            row["epoch_seconds"] for row in history
        ]


# --- planning --------------------------------------------------------------------------------


def job_counts(result) -> dict[str, int]:
    """The job table Snakemake prints: rule -> count, and the total."""
    table = (result.stdout + result.stderr).split("Job stats:")[1].split("\n\n")[0]
    return {
        line.split()[0]: int(line.split()[1])
        for line in table.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


@pytest.fixture(scope="module")
def planning(tmp_path_factory, raw_dir):
    folder = copy_project(tmp_path_factory.mktemp("plan") / "project")
    config = tracked_config(raw_dir, None)
    config["tracking"] = {}
    write_config(folder, config, "off.yaml")
    write_config(folder, tracked_config(raw_dir, None), "on.yaml")
    return folder


@pytest.mark.workflow
def test_tracking_off_plans_no_export_job(planning):
    off = job_counts(run_snakemake(planning, "-n", "--configfile", "off.yaml"))
    bare = run_snakemake(planning, "-n", "--configfile", "off.yaml", "--config", "tracking={}")
    assert job_counts(bare) == off
    assert "track" not in off
    on = job_counts(run_snakemake(planning, "-n", "--configfile", "on.yaml"))
    assert on == {**off, "track": 2, "total": off["total"] + 2}


REFUSALS = [
    ("tracking={wandb: {projekt: x}}", ["'tracking.wandb.projekt'", "did you mean"]),
    ("tracking={wandb: {mode: cloud}}", ["tracking.wandb.mode", "offline, online"]),
    ("tracking={mlflow: {enabled: maybe}}", ["tracking.mlflow.enabled", "boolean"]),
    ("tracking={trackers: [wandb]}", ["'tracking.trackers'", "allowed here"]),
    (
        "tracking={wandb: {enabled: true, mode: online}}",
        ["tracking.wandb.project", "online mode needs a project", "WANDB_PROJECT"],
    ),
    (
        "tracking={mlflow: {enabled: true, tracking_uri: 'https://me:pw@mlflow.lab.org'}}",
        ["tracking.mlflow.tracking_uri", "holds credentials", "MLFLOW_TRACKING_USERNAME"],
    ),
    (
        "tracking={mlflow: {enabled: true, tracking_uri: 'http://[::1'}}",
        ["tracking.mlflow.tracking_uri", "is malformed (Invalid IPv6 URL)"],
    ),
    (
        "tracking={mlflow: {enabled: true, tracking_uri: 'https://mlflow.lab.org/?token=abc'}}",
        ["tracking.mlflow.tracking_uri", "holds credentials", "MLFLOW_TRACKING_TOKEN"],
    ),
    (
        "tracking={mlflow: {tracking_uri: 'ftp://files.lab.org/mlflow'}}",
        ["tracking.mlflow.tracking_uri", "the scheme 'ftp'"],
    ),
]


@pytest.mark.workflow
@pytest.mark.parametrize(("value", "fragments"), REFUSALS, ids=lambda v: str(v)[:40])
def test_bad_tracking_config_is_refused_at_planning(planning, value, fragments):
    env = {key: value for key, value in os.environ.items() if key != "WANDB_PROJECT"}
    result = run_snakemake(
        planning, "-n", "--configfile", "off.yaml", "--config", value, env=env, check=False
    )
    assert_refused(result, *fragments)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://[::1", "is malformed (Invalid IPv6 URL)"),
        ("http://mlflow.lab.org:port", "is malformed (Port could not be cast"),
        ("ftp://files.lab.org/mlflow", "does not track to the scheme 'ftp'"),
        ("s3://bucket/mlflow", "does not track to the scheme 's3'"),
        ("http://my host:5000", "needs a host without spaces, not 'my host'"),
        ("https:///mlflow", "needs a host without spaces; give https://host[:port]"),
        ("http://mlflow.lab.org\n", "holds a control character"),
        ("https://mlflow.lab.org/?token=s3cr3t", "holds credentials"),
        ("https://mlflow.lab.org/#s3cr3t", "holds credentials"),
        ("https://me:s3cr3t@mlflow.lab.org", "holds credentials"),
        ("postgresql://db.lab.org/mlflow?password=s3cr3t", "holds credentials"),
        ("mysql+pymysql://me:s3cr3t@db.lab.org/mlflow", "holds credentials"),
    ],
)
def test_a_tracking_uri_mlflow_cannot_use_or_that_holds_a_secret_is_refused(uri, problem):
    with pytest.raises(tracking.TrackingError) as refused:
        tracking.check_tracking_uri(uri)
    message = str(refused.value)
    assert message.startswith("config key tracking.mlflow.tracking_uri: "), message
    assert problem in message and "\n" not in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "https://mlflow.lab.org/prefix/",
        "http://[::1]:5000",
        "sqlite:///results/mlflow.db",
        "postgresql+psycopg2://db.lab.org/mlflow",
        "postgresql://db.lab.org/mlflow?sslmode=require",
        "file:///srv/mlflow",
        "results/my tracking",
    ],
)
def test_a_tracking_uri_mlflow_takes_is_accepted(uri):
    tracking.check_tracking_uri(uri)


@pytest.mark.workflow
def test_online_project_may_come_from_dotenv(planning):
    (planning / ".env").write_text("# W&B\nexport WANDB_PROJECT='from-dotenv'\n")
    try:
        result = run_snakemake(
            planning,
            "-n",
            "--configfile",
            "off.yaml",
            "--config",
            "tracking={wandb: {enabled: true, mode: online}}",
        )
    finally:
        (planning / ".env").unlink()
    assert job_counts(result)["track"] == 1


@pytest.mark.workflow
@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_tracker_without_its_package_is_refused_naming_the_extra(planning, tmp_path, tracker):
    # A sitecustomize that makes the package unimportable in the Snakemake process,
    # as in a base install: Python's own `sys.modules[name] = None` block.
    (tmp_path / "sitecustomize.py").write_text(f"import sys\nsys.modules[{tracker!r}] = None\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    result = run_snakemake(
        planning,
        "-n",
        "--configfile",
        "off.yaml",
        "--config",
        f"tracking={{{tracker}: {{enabled: true, project: p}}}}"
        if tracker == "wandb"
        else f"tracking={{{tracker}: {{enabled: true}}}}",
        env=env,
        check=False,
    )
    assert_refused(
        result,
        f"tracking.{tracker}.enabled",
        f"{tracker} package is not installed",
        "pip install -e '.[tracking]'",
    )


# --- the run reader --------------------------------------------------------------------------


def test_dotenv_reads_quotes_exports_and_comments(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# secrets\nWANDB_API_KEY=abc\nexport WANDB_ENTITY='lab team'\n"
        'WANDB_PROJECT="p" \nMLFLOW_TRACKING_TOKEN=t # note\nnot a line\nWANDB_ENTITY_EMPTY=\n'
    )
    assert tracking.read_dotenv(dotenv) == {
        "WANDB_API_KEY": "abc",
        "WANDB_ENTITY": "lab team",
        "WANDB_PROJECT": "p",
        "MLFLOW_TRACKING_TOKEN": "t",
    }
    assert tracking.read_dotenv(tmp_path / "none") == {}


def test_wandb_run_id_is_stable_and_distinct():
    first = tracking.wandb_run_id("default", "arch=cnn/lr=0.001/seed=0")
    assert first == tracking.wandb_run_id("default", "arch=cnn/lr=0.001/seed=0")
    assert first != tracking.wandb_run_id("default", "arch=cnn/lr=0.001/seed=1")
    assert first != tracking.wandb_run_id("fashion", "arch=cnn/lr=0.001/seed=0")
    assert len(first) <= 64 and first.replace("-", "").isalnum()
