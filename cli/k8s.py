"""`layerpilot k8s` (manifests, submit, status) and `layerpilot operator run`: the Kubernetes face."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.base import App
from cli.console import emit, field, guarded, out, say
from cli.options import JsonOpt
from cli.tables import plain_table
from service.errors import InputError
from service.files import check_output_dir
from service.spec.loading import load_spec

app = App(
    name="k8s",
    help="Run layerpilot on Kubernetes: manifests, submit a resource, follow it.",
    no_args_is_help=True,
)
operator_app = App(
    name="operator", help="The Kubernetes operator (runs in the cluster).", no_args_is_help=True
)

NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        metavar="NS",
        help="Namespace (default: the kubeconfig context's).",
        show_default=False,
    ),
]


@app.command("manifests")
@guarded
def manifests(
    *,
    image: Annotated[
        str | None,
        typer.Option("--image", metavar="IMAGE", help="Image of the operator and, by default, of its Jobs."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", metavar="URI", help="MLflow server the operator and its Jobs use."),
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option(
            "--write", metavar="DIR", help="Write crd.yaml, rbac.yaml, operator.yaml, example.yaml to DIR."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the CRD, RBAC, the operator's Deployment and an example resource (YAML for kubectl apply)."""
    from k8s import manifests as generated  # deferred: loads the kubernetes client
    from k8s.naming import DEFAULT_IMAGE

    if write is not None:
        check_output_dir(write, "--write")
    files = generated.rendered_files(image or DEFAULT_IMAGE, tracking_uri or generated.DEFAULT_TRACKING_URI)
    if write is None:
        emit(
            {"files": files},
            as_json=as_json,
            render=lambda: typer.echo("---\n".join(files.values()), nl=False),
        )
        return
    write.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (write / name).write_text(text)

    def render() -> None:
        for name in files:
            field("wrote:", str(write / name))

    emit({"written": [str(write / name) for name in files]}, as_json=as_json, render=render)


@app.command("submit")
@guarded
def submit(
    *,
    spec_path: Annotated[
        Path,
        typer.Argument(metavar="SPEC", help="LayerAdaptation YAML (the whole resource or only its spec)."),
    ],
    namespace: NamespaceOpt = None,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="Resource name (default: the file's metadata.name)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the LayerAdaptation resource from the same file the CLI takes; the operator runs it."""
    import yaml

    from k8s.cluster import Cluster, default_namespace
    from service.spec.models import API_VERSION, KIND

    spec = load_spec(spec_path)  # one-line error naming the field, before any cluster call
    raw = yaml.safe_load(spec_path.read_text()) or {}
    meta = raw.get("metadata", {}) if isinstance(raw, dict) and "spec" in raw else {}
    chosen = name or meta.get("name")
    if not chosen:
        raise InputError(
            "metadata.name", f"{spec_path} names no resource", "add metadata.name or pass --name"
        )
    ns = namespace or meta.get("namespace") or default_namespace()
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": chosen, "namespace": ns},
        "spec": spec.model_dump(mode="json", by_alias=True),
    }
    cluster = Cluster.connect()
    if not cluster.create(body):
        raise InputError(
            "metadata.name",
            f"LayerAdaptation {ns}/{chosen} already exists (and its spec is immutable)",
            "pass another --name, or `kubectl delete la " + chosen + f" -n {ns}` first",
        )
    result = {"namespace": ns, "name": chosen, "server": cluster.server}

    def render() -> None:
        say(f"created LayerAdaptation {ns}/{chosen}")
        field("follow it:", f"layerpilot k8s status {chosen} -n {ns}")

    emit(result, as_json=as_json, render=render)


@app.command("status")
@guarded
def status(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="LayerAdaptation name.")],
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Phase, conditions, Jobs, and where to look in MLflow."""
    from k8s.cluster import Cluster, default_namespace
    from k8s.naming import Resource
    from k8s.status import job_state
    from service.spec.models import KIND

    ns = namespace or default_namespace()
    cluster = Cluster.connect()
    body = cluster.get(KIND, ns, name)
    if body is None:
        raise InputError("NAME", f"no LayerAdaptation {ns}/{name}", f"see `kubectl get la -n {ns}`")
    st: dict[str, Any] = dict(body.get("status") or {})
    jobs = []
    for stage, child in (st.get("jobs") or {}).items():
        kind = (
            "TrainJob"
            if stage == "train" and (body.get("spec", {}).get("resources", {}).get("nodes") or 1) > 1
            else "Job"
        )
        obj = cluster.get(kind, ns, child)
        state = job_state(obj) if obj else None
        jobs.append(
            {
                "stage": stage,
                "kind": kind,
                "name": child,
                "state": "missing"
                if state is None
                else "failed"
                if state.failed
                else "complete"
                if state.done
                else "running",
                "succeeded": (obj or {}).get("status", {}).get("succeeded"),
            }
        )
    resource = Resource.of(body)
    result = {"namespace": ns, "name": name, "uid": resource.uid, "status": st, "jobs": jobs}

    def render() -> None:
        say(f"{ns}/{name}: {st.get('phase', 'Pending (the operator has not seen it yet)')}")
        if st.get("message"):
            field("message:", st["message"])
        for cond in st.get("conditions") or []:
            mark = {"True": "yes", "False": "no"}.get(cond["status"], "?")
            say(f"  {cond['type']:<11}{mark:<4}{cond.get('reason', '')}: {cond.get('message', '')}")
        if jobs:
            job_table = plain_table("stage", "kind", "name", "state")
            for entry in jobs:
                job_table.add_row(entry["stage"], entry["kind"], entry["name"], entry["state"])
            out.print(job_table)
        for label, key in (("top layers:", "topLayers"), ("selected:", "selectedLayers")):
            if st.get(key) is not None:
                field(label, ",".join(map(str, st[key])))
        if st.get("profile"):
            field("profile:", f"reused the {st['profile']}")
        mlflow = st.get("mlflow") or {}
        if st.get("modelVersion"):
            field("version:", f"{st.get('registeredModel')} {st['modelVersion']} (alias candidate)")
            review = f"layerpilot registry show {st.get('registeredModel')} {st['modelVersion']}"
            field("review:", f"{review} --tracking-uri {mlflow.get('trackingUri')}")
        if mlflow.get("url"):
            field("MLflow:", mlflow["url"])

    emit(result, as_json=as_json, render=render)


@operator_app.command("run")
@guarded
def run(
    *,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", metavar="NS", help="Watch only this namespace (default: all)."),
    ] = None,
) -> None:
    """Run the operator: LayerAdaptation resources become probe, training and registration Jobs."""
    from k8s.operator import run as run_operator

    try:
        run_operator(namespace)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
