"""Container images as distributions: references, manifests, registries, layer rules.

The pure parts (reference, manifest, whiteout, auth's parsers) are unit-tested and
shared by the client, which fetches an image as the user, and the archive worker,
which applies its layers. Nothing here imports the service.
"""
