"""Models: where their files are, how they load, and their decoder layers.

Owns: resolving `model.uri` to files (`hub`), loading with the remote-code gate (`loading`),
finding, freezing and counting decoder layers (`stack`), and the weights fingerprint (`weights`).
Imports only `service.spec` and `service.errors` of layerpilot; training, probing and patches
build on it, never the other way round.
"""
