"""deploy/k8s/: every manifest validates against the Kubernetes schema (kubernetes-validate, strict:
unknown fields are errors), and the manifests agree with the CLIs they start: the container args
parse with the real parsers (learner/cli.py, actors/cli.py via deploy/cluster_task.py), the ports
the learner binds are the ports its pod and its Service expose, the actors' --learner names that
Service, and the Indexed Job's pod indices give non-overlapping actor ids.
"""
from __future__ import annotations

import os

# yaml and kubernetes_validate are test dependencies (pyproject's `test` extra): a missing one
# is a collection error that fails CI, never a skip of this whole file.
import kubernetes_validate
import pytest
import yaml

from actors.cli import build_parser as actors_parser
from deploy.cluster_task import actors_argv, build_parser as task_parser
from fpac_async.wire.transport import actor_endpoints, learner_endpoints
from learner.cli import build_parser as learner_parser

K8S = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "k8s")
# The oldest Kubernetes the manifests claim to work on, and the newest schema the pinned
# kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "1.37.0")


def kustomization() -> dict:
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        return yaml.safe_load(f)


def resources() -> dict[str, dict]:
    """{kind/name: document} over the files the kustomization lists."""
    docs = {}
    for name in kustomization()["resources"]:
        with open(os.path.join(K8S, name)) as f:
            for doc in yaml.safe_load_all(f):
                docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def container(doc: dict) -> dict:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_kustomization_lists_every_manifest_and_only_existing_ones():
    listed = set(kustomization()["resources"])
    present = {f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version):
    docs = resources()
    assert {"PersistentVolumeClaim/fpac-runs", "Service/fpac-learner", "Job/fpac-learner",
            "Job/fpac-actors"} <= set(docs)
    for key, doc in docs.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{key} is not a valid Kubernetes {version} object: {e.message} "
                        f"at {'/'.join(map(str, e.path))}")


def learner_args() -> list[str]:
    c = container(resources()["Job/fpac-learner"])
    assert c["command"] == ["python", "-m", "deploy.cluster_task", "learner"]
    return [str(a) for a in c["args"]]


def test_learner_args_parse_and_its_ports_are_the_pods_and_the_services():
    docs = resources()
    args = learner_parser().parse_args(learner_args())  # SystemExit on an unknown flag
    bind = getattr(args, "learner.bind")
    ep = learner_endpoints(bind)
    bound = {int(e.rsplit(":", 1)[1]) for e in (ep.data, ep.pub, ep.control)}
    pod = container(docs["Job/fpac-learner"])
    assert {p["containerPort"] for p in pod["ports"]} == bound
    service = docs["Service/fpac-learner"]
    assert service["spec"]["clusterIP"] == "None"  # headless: the name is the pod's address
    assert {p["port"] for p in service["spec"]["ports"]} == bound
    assert {p["targetPort"] for p in service["spec"]["ports"]} == bound
    labels = docs["Job/fpac-learner"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    actor_labels = docs["Job/fpac-actors"]["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= actor_labels.items()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pod[probe]["tcpSocket"]["port"] in bound


def test_learner_has_its_gpu_and_its_run_dir_on_the_volume():
    docs = resources()
    args = learner_parser().parse_args(learner_args())
    pod = container(docs["Job/fpac-learner"])
    gpus = getattr(args, "learner.gpus")
    assert gpus >= 1 and pod["resources"]["limits"]["nvidia.com/gpu"] == gpus
    run_dir = getattr(args, "run.run_dir")
    pod_spec = docs["Job/fpac-learner"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = [m for m in pod["volumeMounts"]
              if run_dir.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, (run_dir, pod["volumeMounts"])
    claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in docs
    assert pod_spec["restartPolicy"] == "OnFailure"


def actor_task_argv(index: int) -> list[str]:
    """What pod `index` of the Indexed Job passes to fpac-actors (deploy/cluster_task.py)."""
    c = container(resources()["Job/fpac-actors"])
    task_args, rest = task_parser().parse_known_args([*c["command"][3:], *c["args"]])
    assert c["command"][:3] == ["python", "-m", "deploy.cluster_task"]
    assert task_args.role == "actors"
    return actors_argv(rest, task_args.per_task, {"JOB_COMPLETION_INDEX": str(index)},
                       task_args.id_base, None, task_args.learner_port, task_args.evaluator)


def test_actor_pods_reach_the_learner_service_with_disjoint_ids_and_the_same_task():
    docs = resources()
    job = docs["Job/fpac-actors"]
    assert job["spec"]["completionMode"] == "Indexed"
    pods = job["spec"]["completions"]
    assert pods >= 2 and job["spec"]["parallelism"] == pods
    learner = learner_parser().parse_args(learner_args())
    data_port = int(learner_endpoints(getattr(learner, "learner.bind")).data.rsplit(":", 1)[1])
    ids: list[int] = []
    evaluators = 0
    for index in range(pods):
        args = actors_parser().parse_args(actor_task_argv(index))  # SystemExit on a bad flag
        ep = actor_endpoints(args.learner)
        assert ep.data == f"tcp://fpac-learner:{data_port}"  # the Service's name and data port
        ids += range(args.actor_id_offset, args.actor_id_offset + args.n)
        evaluators += args.evaluator
        # The actors run the learner's task and env (the learner refuses other settings).
        for dest in ("env.task", "env.action_repeat", "env.image_size", "agent.encoder"):
            assert getattr(args, dest) == getattr(learner, dest), dest
    assert len(ids) == len(set(ids)) == pods * args.n  # no actor id twice
    assert evaluators == 1  # evaluations need exactly one evaluator
    cpu = int(container(job)["resources"]["requests"]["cpu"])
    assert args.n == cpu  # one actor per requested core (docs/SCALING_OUT.md)
    assert "nvidia.com/gpu" not in str(container(job)["resources"])


WITH_AUTH = os.path.join(K8S, "with-auth")


def json_patch_add(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 `add` (the only op the overlay uses), as kustomize applies it."""
    import copy  # noqa: PLC0415
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = op["path"].strip("/").split("/")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node.append(op["value"]) if last == "-" else node.insert(int(last), op["value"])
        else:
            node[last] = op["value"]
    return doc


def with_auth() -> tuple[dict, dict[str, dict]]:
    """(the overlay's kustomization, {kind/name: patched document})."""
    with open(os.path.join(WITH_AUTH, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    assert kust["resources"] == [".."]
    docs = resources()
    for patch in kust["patches"]:
        key = f"{patch['target']['kind']}/{patch['target']['name']}"
        with open(os.path.join(WITH_AUTH, patch["path"])) as f:
            docs[key] = json_patch_add(docs[key], yaml.safe_load(f))
    return kust, docs


def test_the_with_auth_overlay_gives_each_pod_the_keys_auth_reads(tmp_path):
    """deploy/k8s/with-auth: the patched Jobs validate, their args parse with --auth, and the
    Secret's keys (made by the real fpac-keys), laid out as each pod's volume items say, load
    with the learner's and the actors' key loaders: the actor key the learner accepts is the one
    the actors hold. Catches a wrong item path, a missing key or a flag the CLIs lack."""
    from deploy.keys_cli import create_keys  # noqa: PLC0415
    from fpac_async.wire.auth import load_client_keys, load_server_keys  # noqa: PLC0415
    kust, docs = with_auth()
    for key in ("Job/fpac-learner", "Job/fpac-actors"):
        kubernetes_validate.validate(docs[key], K8S_VERSIONS[-1], strict=True)
    keys = tmp_path / "keys"
    create_keys(str(keys), actors=1)
    (gen,) = kust["secretGenerator"]
    secret = dict(item.split("=", 1) for item in gen["files"])  # Secret key -> file in with-auth
    pods = {}
    for key in ("Job/fpac-learner", "Job/fpac-actors"):
        spec = docs[key]["spec"]["template"]["spec"]
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
        (mount,) = [m for m in container(docs[key])["volumeMounts"] if m["name"] == "auth"]
        (vol,) = [v for v in spec["volumes"] if v["name"] == "auth"]
        assert vol["secret"]["secretName"] == gen["name"]
        pod = tmp_path / key.split("/")[1]
        for item in vol["secret"]["items"]:  # the Secret volume as the kubelet writes it
            src = keys / os.path.relpath(secret[item["key"]], "keys")
            (pod / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (pod / item["path"]).write_bytes(src.read_bytes())
        args = [str(a) for a in container(docs[key])["args"]]
        assert flag(args, "--auth") == mount["mountPath"]
        pods[key] = (pod, args)
    learner_pod, largs = pods["Job/fpac-learner"]
    learner_parser().parse_args(largs)  # SystemExit on a flag fpac-learner lacks
    server = load_server_keys(str(learner_pod))
    actor_pod, aargs = pods["Job/fpac-actors"]
    client = load_client_keys(str(actor_pod), flag(aargs, "--auth-key"))
    actors_parser().parse_args(aargs)  # SystemExit on a flag fpac-actors lacks
    assert client.server == server.public  # the actors talk to this learner
    from fpac_async.wire.auth import load_key_file  # noqa: PLC0415
    accepted = [load_key_file(os.path.join(server.allowed_dir, f), secret=False)[0]
                for f in os.listdir(server.allowed_dir)]
    assert accepted == [client.public]  # and the learner accepts exactly their key
