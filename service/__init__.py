"""layerpilot's engine: probe, train and package only the decoder layers that matter.

Layered, each package importing only those below it (checked by import-linter):

    demo                      the shipped demo job
    adapt                     probe → select → train → evaluate → register, in one work directory
    tracking                  MLflow: runs, what each run records, registry and review (only mlflow user)
    probe                     exact units and merge, proxies, report and chart, selection, plan export
    training | evaluation     layer-selective GRPO on TRL; greedy scoring
    patch | rewards | data    layer patches; TRL-shaped rewards; training and eval rows
    models                    model files, loading, decoder layers, weights fingerprint
    spec                      the LayerAdaptation spec (source of the CLI file, the CRD, the reference)
    errors | files | progress one-line errors, atomic writes, the progress protocol

Nothing here imports typer, kopf or kubernetes, nor prints: the faces (CLI, operator, MLflow
plugins) decide what a person sees.
"""

__version__ = "0.1.0"
