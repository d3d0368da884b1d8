"""The deployment artifacts, checked for real without a cluster or a Docker engine.

- The Kustomize base (deploy/k8s/base) is rendered with kustomize's own library and every
  document decoded into its Kubernetes / prometheus-operator Go type with unknown and duplicate
  fields as errors, then checked against the project's policy (deploy/tools/k8scheck, Go):
  non-root, read-only root filesystem, no privilege escalation, capabilities dropped, probes on
  /readyz and /livez, two chainers that an update never turns into three, secrets referenced and
  never contained, only variable names the ledger side reads. Broken copies must fail, naming
  the problem.
- The PrometheusRule is the generator's output for deploy/prometheus/alerts.yml.
- deploy/docker-compose.yml loads as `docker compose config` would load it (compose-go: the
  compose-spec schema), with metrics on the loopback address only.

The checker is built by deploy/k8scheck.sh (Go, modules from the Go proxy on the first build).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from baldur_audit.consumers.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "deploy" / "k8scheck.sh"
BASE = ROOT / "deploy" / "k8s" / "base"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
GENERATOR = ROOT / "deploy" / "tools" / "prometheus_rule.py"

#: The first build downloads the Go modules and compiles Kubernetes' API types: minutes.
BUILD_TIMEOUT = 900
RUN_TIMEOUT = 120
ENV_NAMES = ",".join(variable.name for variable in VARIABLES)
COMPONENTS = "chainer,monitor,verify"


@pytest.fixture(scope="module")
def k8scheck() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs deploy/k8scheck.sh (built once) with the given arguments."""
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Go is not installed: the deployment checker cannot be built")
        pytest.skip("Go is not installed: the deployment checker cannot be built")
    built = subprocess.run(
        [str(SCRIPT), "build"], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert built.returncode == 0, built.stderr

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    return run


def check_base(
    run: Callable[..., subprocess.CompletedProcess[str]], base: Path
) -> subprocess.CompletedProcess[str]:
    return run("manifests", "-k", str(base), "-env-names", ENV_NAMES, "-require-components", COMPONENTS)


def test_the_base_passes_the_checker(k8scheck: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = check_base(k8scheck, BASE)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_the_rendered_stream_holds_every_part(
    k8scheck: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = k8scheck("render", str(BASE))
    assert done.returncode == 0, done.stderr
    kinds = re.findall(r"^kind: (\w+)$", done.stdout, re.MULTILINE)
    assert sorted(kinds) == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Service",
            "Deployment",
            "Deployment",
            "PodDisruptionBudget",
            "CronJob",
            "NetworkPolicy",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    assert "kind: Secret" not in done.stdout
    assert "namespace:" not in done.stdout  # namespace-agnostic
    assert "image: baldur-audit:0.1.0" in done.stdout
    commands = [
        re.findall(r"- (\S+)", block) for block in re.findall(r"args:\n((?:\s+- .+\n)+)", done.stdout)
    ]
    assert sorted(commands) == [
        ["chain", "--metrics-address", "0.0.0.0:9464"],
        ["monitor", "--every", "5m", "--full-every", "24h", "--metrics-address", "0.0.0.0:9465"],
        ["verify", "--json"],
    ]
    assert "BALDUR_LOG_FORMAT: json" in done.stdout


def command_lines() -> dict[str, list[str]]:
    """Every command line of the manifests, the init Job and the compose file."""
    texts = {path.name: path.read_text() for path in (*BASE.glob("*.yaml"), BASE.parent / "init-job.yaml")}
    found: dict[str, list[str]] = {}
    for name, text in texts.items():
        for match in re.finditer(r"args: \[(.*)\]|args:\n((?:\s+- .+\n)+)", text):
            if match[1] is not None:
                args = re.findall(r'"([^"]*)"', match[1])
            else:
                args = re.findall(r"- (\S+)", match[2])
            found[f"{name}: {args[0]}"] = args
    for match in re.finditer(
        r"^  (\w+):\n    <<: \*baldur-audit\n(?:    .*\n)*?    command: \[(.*)\]",
        COMPOSE.read_text(),
        re.MULTILINE,
    ):
        found[f"docker-compose.yml: {match[1]}"] = re.findall(r'"([^"]*)"', match[2])
    return found


def test_every_command_line_is_one_the_cli_accepts() -> None:
    """The commands and options the manifests pass exist (click rejects an unknown option before
    it handles --help), so a renamed flag cannot break the deployment unnoticed."""
    found = command_lines()
    assert len(found) == 7, sorted(found)  # chainer, monitor, verify, init; compose: init, chainer, monitor
    for where, args in sorted(found.items()):
        done = subprocess.run(
            [sys.executable, "-m", "baldur_audit.consumers", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"{where}: {args}: {done.stderr}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_same_stream(
    k8scheck: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """The checker's rendering is kubectl's, and it checks a stream read from stdin too."""
    kubectl = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert kubectl.returncode == 0, kubectl.stderr
    assert kubectl.stdout == k8scheck("render", str(BASE)).stdout
    done = k8scheck("manifests", "-", stdin=kubectl.stdout)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_the_example_secrets_are_what_the_workloads_reference(
    k8scheck: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """secret.example.yaml names every Secret and key the base and the init Job need (and no
    other), and the init Job passes the same policy."""
    stream = k8scheck("render", str(BASE)).stdout + "---\n" + (BASE.parent / "init-job.yaml").read_text()
    done = k8scheck(
        "manifests",
        "-env-names",
        ENV_NAMES,
        "-require-components",
        COMPONENTS + ",init",
        "-secrets-from",
        str(BASE.parent / "secret.example.yaml"),
        "-",
        stdin=stream,
    )
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr
    # Without the init Job, its owner DSN is a Secret nobody references.
    done = k8scheck("manifests", "-k", str(BASE), "-secrets-from", str(BASE.parent / "secret.example.yaml"))
    assert done.returncode == 1
    assert 'Secret "baldur-audit-owner-dsn" is referenced by no workload' in done.stdout


def test_a_missing_secret_key_is_named(
    tmp_path: Path, k8scheck: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text((BASE.parent / "secret.example.yaml").read_text().replace("  reader: ", "  readr: "))
    done = k8scheck("manifests", "-k", str(BASE), "-secrets-from", str(secrets))
    assert done.returncode == 1
    assert (
        'CronJob/baldur-audit-verify: needs key "reader" of Secret "baldur-audit-dsn", '
        f"which {secrets} lacks" in done.stdout
    )


# (file of the base, text replaced, its replacement, a line the checker must print)
MUTATIONS = {
    "unknown field": (
        "chainer.yaml",
        "  replicas: 2\n",
        "  replica: 2\n",
        'Deployment/baldur-audit-chainer: unknown field "spec.replica"',
    ),
    "misspelt readinessProbe": (
        "monitor.yaml",
        "readinessProbe:",
        "readinesProbe:",
        'Deployment/baldur-audit-monitor: unknown field "spec.template.spec.containers[0].readinesProbe"',
    ),
    "runAsNonRoot false": (
        "chainer.yaml",
        "      securityContext:\n        runAsNonRoot: true",
        "      securityContext:\n        runAsNonRoot: false",
        "Deployment/baldur-audit-chainer: spec.securityContext.runAsNonRoot must be true",
    ),
    "writable root filesystem": (
        "verify-cronjob.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        'CronJob/baldur-audit-verify: container "verify": '
        "securityContext.readOnlyRootFilesystem must be true",
    ),
    "privilege escalation": (
        "monitor.yaml",
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
        'Deployment/baldur-audit-monitor: container "monitor": '
        "securityContext.allowPrivilegeEscalation must be false",
    ),
    "capabilities kept": (
        "chainer.yaml",
        'drop: ["ALL"]',
        'drop: ["NET_RAW"]',
        'Deployment/baldur-audit-chainer: container "chainer": '
        "securityContext.capabilities.drop must contain ALL",
    ),
    "three chainers": (
        "chainer.yaml",
        "  replicas: 2\n",
        "  replicas: 3\n",
        "Deployment/baldur-audit-chainer: spec.replicas must be 2 "
        "(one active chainer, one hot standby), found 3",
    ),
    "a surge during updates": (
        "chainer.yaml",
        "maxSurge: 0",
        "maxSurge: 1",
        "Deployment/baldur-audit-chainer: spec.strategy.rollingUpdate.maxSurge must be 0",
    ),
    "readiness on the wrong path": (
        "chainer.yaml",
        "path: /readyz",
        "path: /healthz",
        'Deployment/baldur-audit-chainer: container "chainer": readinessProbe.httpGet.path must be /readyz',
    ),
    "unknown kind": (
        "verify-cronjob.yaml",
        "kind: CronJob",
        "kind: Cronjob",
        'Cronjob/baldur-audit-verify: unknown kind "Cronjob" of apiVersion "batch/v1"',
    ),
    "misspelt variable": (
        "config.env",
        "BALDUR_AUDIT_TOPIC=",
        "BALDUR_AUDIT_TOPICS=",
        "sets BALDUR_AUDIT_TOPICS, which is not a known baldur-audit variable",
    ),
    "a secret in the base": (
        "serviceaccount.yaml",
        "automountServiceAccountToken: false\n",
        "automountServiceAccountToken: false\n---\napiVersion: v1\nkind: Secret\n"
        "metadata:\n  name: baldur-audit-keys\nstringData:\n  signing-key: hex:00\n",
        "Secret/baldur-audit-keys: holds a Secret",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_broken_copy_fails_naming_the_problem(
    case: str, tmp_path: Path, k8scheck: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    name, old, new, expected = MUTATIONS[case]
    base = tmp_path / "base"
    shutil.copytree(BASE, base)
    text = (base / name).read_text()
    assert old in text, f"{name} no longer holds {old!r}: update the test"
    (base / name).write_text(text.replace(old, new, 1))
    done = check_base(k8scheck, base)
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(expected in line for line in done.stdout.splitlines()), done.stdout


def test_a_duplicate_key_in_a_stream_fails(k8scheck: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """YAML would keep the last of two equal keys; the checker refuses them (kustomize does too)."""
    stream = k8scheck("render", str(BASE)).stdout
    assert "\n  replicas: 2\n" in stream
    done = k8scheck(
        "manifests", "-", stdin=stream.replace("\n  replicas: 2\n", "\n  replicas: 2\n  replicas: 3\n", 1)
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'key "replicas" already set in map' in done.stdout


def test_unreadable_input_exits_2(k8scheck: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = k8scheck("manifests", "-", stdin="kind: [unclosed\n")
    assert done.returncode in (1, 2), done.stdout + done.stderr
    assert k8scheck("manifests", "-k", "/nonexistent").returncode == 2


# -- the PrometheusRule --------------------------------------------------------------------------


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prometheus_rule", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheus_rule_is_generated_from_the_alert_rules() -> None:
    module = generator()
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    committed = (BASE / "prometheusrule.yaml").read_text()
    assert committed == module.prometheus_rule(rules), (
        "deploy/k8s/base/prometheusrule.yaml is stale: run python3 deploy/tools/prometheus_rule.py"
    )
    done = subprocess.run(
        ["python3", str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # Every alert of the rule file is in the manifest.
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert alerts and alerts == re.findall(r"- alert: (\w+)", committed)


def test_the_generator_refuses_a_rule_file_it_cannot_wrap() -> None:
    module = generator()
    with pytest.raises(ValueError, match="one top-level key"):
        module.prometheus_rule("groups:\n  - name: a\n    rules: []\nextra: 1\n")
    with pytest.raises(ValueError, match="one top-level key"):
        module.prometheus_rule("# only a comment\n")


# -- docker compose ------------------------------------------------------------------------------


def test_the_compose_file_is_valid(k8scheck: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = k8scheck("compose", "-env-names", ENV_NAMES, str(COMPOSE))
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  read_only: true\n", "  read_only: true\n  read_onyl: true\n", "read_onyl"),
        ('"127.0.0.1:9464:9464"', '"9464:9464"', "service chainer: publishes port 9464"),
        ('  user: "10001:10001"\n', '  user: "0:0"\n', "user must be a fixed non-root UID:GID"),
        (
            "condition: service_completed_successfully",
            "condition: service_finished",
            "depends_on.init.condition value must be one of",
        ),
    ],
)
def test_a_broken_compose_file_fails(
    old: str,
    new: str,
    expected: str,
    tmp_path: Path,
    k8scheck: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copytree(ROOT / "deploy" / "postgres", deploy / "postgres")
    text = COMPOSE.read_text()
    assert old in text, f"docker-compose.yml no longer holds {old!r}: update the test"
    broken = deploy / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    done = k8scheck("compose", "-env-names", ENV_NAMES, str(broken))
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in done.stdout
