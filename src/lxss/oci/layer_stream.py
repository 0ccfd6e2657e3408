"""The contract between the client and the service for an image's layers
(io.lxss.Service's RegisterDistribution `layers` and `image`): the layer list and
image defaults as Varlink values, and the checks the service makes on them (they
come from a client: bounded and well-formed, or refused before a worker starts).

The layers' blobs travel on the call's `archive` fd, back to back, each exactly
its `size` bytes, in the order listed; the worker checks each one's digest.
"""

from __future__ import annotations

from typing import Any

from lxss.oci.manifest import MAX_ENV, MAX_ENV_BYTES, MAX_LAYER_SIZE, MAX_LAYERS, ImageConfig
from lxss.oci.reference import DIGEST


def layer_value(digest: str, size: int) -> dict[str, Any]:
    return {"digest": digest, "size": size}


def image_value(config: ImageConfig) -> dict[str, Any]:
    return {"env": list(config.env), "user": config.user, "workingDir": config.working_dir}


def check(layers: Any, image: Any) -> str | None:
    """What is wrong with *layers* and *image* (the call's values), or None."""
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        return f"an image has 1 to {MAX_LAYERS} layers"
    for layer in layers:
        if not isinstance(layer, dict) or not DIGEST.fullmatch(str(layer.get("digest"))):
            return "a layer's digest is not sha256:<64 hex digits> (or sha512)"
        size = layer.get("size")
        if not isinstance(size, int) or not 0 < size <= MAX_LAYER_SIZE:
            return f"a layer's size is not between 1 and {MAX_LAYER_SIZE} bytes"
    if image is None:
        return None
    if not isinstance(image, dict):
        return "image is not an object"
    env = image.get("env") or []
    if not isinstance(env, list) or len(env) > MAX_ENV:
        return f"image.env has more than {MAX_ENV} entries"
    if sum(len(str(v)) for v in env) > MAX_ENV_BYTES:
        return f"image.env holds more than {MAX_ENV_BYTES} bytes"
    for value in (*env, image.get("user") or "", image.get("workingDir") or ""):
        if not isinstance(value, str) or "\0" in value or len(value) > 4096:
            return "image holds a value that is not a string of at most 4096 characters"
    return None
