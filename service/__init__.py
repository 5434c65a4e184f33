"""layerpilot's engine: probe, train and package only the decoder layers that matter.

Layered, each package importing only those below it (checked by import-linter):

    demo                      the shipped demo job
    adapt                     probe → select → train → evaluate → register, in one work directory
    register                  the last stage: evaluate base and base + patch, ask for a version
    probe                     exact units and merge, proxies, report and chart, selection, export
    training | evaluation     layer-selective GRPO on TRL; greedy scoring
    tracking                  the record published onto MLflow; registry and review (only mlflow user)
    patch | rewards | data    layer patches; TRL-shaped rewards; training and eval rows
    models                    model files, loading, decoder layers, weights fingerprint
    spec | record             the LayerAdaptation spec; the work directory as the record of its runs
    files | progress | ranks | fields    atomic writes, progress, which process, one source per JSON
    errors                    one-line errors

Nothing here imports typer, kopf or kubernetes, nor prints: the faces (CLI, operator, MLflow
plugins) decide what a person sees.
"""

__version__ = "0.1.0"
