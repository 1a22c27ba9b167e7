"""The Ray cluster-launcher configs (cluster.yaml, cluster-onprem.yaml), checked offline.

Validation is what `ray up` does before it contacts any cloud
(ray/autoscaler/_private/commands.py `_bootstrap_config`):
``prepare_config`` (merge with the provider's defaults.yaml; for the ``local``
provider first ``prepare_local``, which builds the single node type) then
``validate_config`` (Ray's ray-schema.json plus its cross-field checks). Neither
needs credentials or network. On top of the schema, the tests pin the
project's security and shape rules: a head that runs no trials, GPU workers,
a dashboard bound to loopback, no secrets in the files, and the same install
steps on both variants.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

import ray  # noqa: E402
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLOUD, ONPREM = "cluster.yaml", "cluster-onprem.yaml"
CONFIGS = [CLOUD, ONPREM]

SECRET_KEY_WORDS = ("aws_access_key_id", "aws_secret_access_key", "password", "passwd", "token", "secret", "credentials")
SECRET_TEXT = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE),  # URL with user:password@
    # key: value / KEY=value with a literal value (a path such as ~/.ray/auth_token is fine)
    re.compile(r"(?:password|passwd|token|secret|aws_access_key_id|aws_secret_access_key)\w*\s*[:=]\s*(?![~/.$])\S", re.IGNORECASE),
]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def prepared(name: str) -> dict:
    return prepare_config(load(name))


def check(config: dict) -> None:
    """What `ray up` runs before touching the provider."""
    validate_config(prepare_config(config))


def keys(node, path=()):
    """Every mapping key in a YAML document, with its path; file_mounts keys are remote paths, not settings."""
    if isinstance(node, dict):
        for key, value in node.items():
            if path != ("file_mounts",):
                yield path + (str(key),)
            yield from keys(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from keys(value, path + (str(i),))


def head_start(config: dict) -> str:
    starts = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 1, config["head_start_ray_commands"]
    return starts[0]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_rays_schema(name):
    config = prepared(name)
    validate_config(config)
    assert config["provider"]["type"] == ("aws" if name == CLOUD else "local")


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_listens_on_loopback_only(name):
    # Checked after prepare_config: an omitted head_start_ray_commands would
    # silently take the provider default, which for AWS binds 0.0.0.0.
    config = prepared(name)
    start = head_start(config)
    assert "--head" in start
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1(\s|$)", start), start
    assert "0.0.0.0" not in " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])


def test_cloud_head_runs_no_trials():
    config = load(CLOUD)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in head_start(config)


def test_cloud_workers_have_gpus_spot_first_on_demand_floor():
    config = load(CLOUD)
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, name
        assert node_type["resources"].get("CPU", 0) >= 1, name
    spot = {n for n, t in workers.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"}
    on_demand = set(workers) - spot
    assert spot and on_demand
    assert min(workers[n].get("priority", 0) for n in spot) > max(workers[n].get("priority", 0) for n in on_demand)
    # gensweep asks trials for a GPU share only if the cluster has a GPU when the
    # sweep starts, so some GPU worker must stay up.
    assert sum(t.get("min_workers", 0) for t in workers.values()) >= 1
    # Spot nodes cannot be stopped: idle nodes must be terminated.
    assert config["provider"]["cache_stopped_nodes"] is False
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert len(images) == 1
    assert re.fullmatch(r"ami-(REPLACE_ME|[0-9a-f]{8,17})", images.pop())


def test_onprem_head_runs_no_trials():
    config = load(ONPREM)
    # The local provider rejects available_node_types; the head's start command carries the limits.
    assert "available_node_types" not in config
    start = head_start(config)
    assert "--num-cpus=0" in start and "--num-gpus=0" in start
    assert config["provider"]["head_ip"] not in config["provider"]["worker_ips"]


@pytest.mark.parametrize("name", CONFIGS)
def test_no_secrets_in_file(name):
    text = (ROOT / name).read_text()
    for path in keys(yaml.safe_load(text)):
        assert not any(word in path[-1].lower() for word in SECRET_KEY_WORDS), "/".join(path)
    assert "aws_credentials" not in yaml.safe_load(text)["provider"]
    for pattern in SECRET_TEXT:
        match = pattern.search(text)
        assert match is None, f"{name}: secret-looking text {match.group(0)!r}"


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_token_authentication_is_on(name):
    config = load(name)
    # The token travels as a file copied from the user's machine, never as text here.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c and "bashrc" in c for c in config["setup_commands"])
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command, command


def test_both_variants_install_the_same_way():
    cloud, onprem = load(CLOUD), load(ONPREM)
    for key in ("file_mounts", "rsync_exclude", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert cloud.get(key) == onprem.get(key), key


def test_file_mounts_cover_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mounts = load(CLOUD)["file_mounts"]
    for remote, local in mounts.items():
        if remote.startswith("~/gensweep/"):
            assert (ROOT / local).exists(), f"file mount source {local} is missing"
        else:
            assert (remote, local) == ("~/.ray/auth_token", "~/.ray/auth_token"), remote
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.split(".")[0].rstrip("*")
        assert mounts.get(f"~/gensweep/{package}") == f"./{package}", f"package {package} is not mounted"
    assert mounts.get("~/gensweep/pyproject.toml") == "./pyproject.toml"
    assert any(re.search(r"pip install .*-e ~/gensweep\b", c) for c in load(CLOUD)["setup_commands"])


def test_cluster_ray_matches_local_ray():
    pins = re.findall(r"ray\[[^\]]*\]==([0-9][0-9A-Za-z.]*)", " ".join(load(CLOUD)["setup_commands"]))
    assert pins == [ray.__version__], "pin ray in setup_commands to the Ray that runs `ray up` and `ray job submit`"


# --- malformed configs must fail -------------------------------------------------

def test_missing_provider_fails():
    config = load(CLOUD)
    del config["provider"]
    with pytest.raises(KeyError):  # prepare_config looks up the provider's defaults first
        check(config)
    with pytest.raises(jsonschema.ValidationError, match="provider"):
        validate_config(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_top_level_key_fails(name):
    config = load(name)
    config["setup_comands"] = ["echo typo"]
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        check(config)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.update(min_worker=1),  # unknown node-type key
        lambda t: t["resources"].update(GPU=0.5),  # node resources must be whole numbers
        lambda t: t.pop("node_config"),  # required
    ],
    ids=["unknown-key", "fractional-gpu", "no-node-config"],
)
def test_bad_node_type_fails(change):
    config = load(CLOUD)
    change(config["available_node_types"]["gpu-spot"])
    with pytest.raises(jsonschema.ValidationError):
        check(config)


def test_min_workers_above_max_workers_fails():
    config = copy.deepcopy(load(CLOUD))
    config["max_workers"] = 0
    with pytest.raises(ValueError, match="max_workers"):
        check(config)


def test_onprem_node_types_are_rejected():
    import click

    config = load(ONPREM)
    config["available_node_types"] = load(CLOUD)["available_node_types"]
    with pytest.raises(click.ClickException):
        check(config)
