from paddlevision.models.alexnet import MIN_INPUT_SIZE, AlexNet, alexnet
from paddlevision.weights import load_state_dict_checked, num_classes_of, read_weights, resolve_weights

_MODELS = {"alexnet": alexnet}


def get_model(name, **kwargs):
    """Build a model by its command-line name; an unknown name lists the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown --model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**kwargs)


def list_models():
    return sorted(_MODELS)


def build_from_weights(source, model_name=None, num_classes=None, sha256=None, **model_kwargs):
    """The model a weights file describes, for predict and export: the class count comes
    from the file unless ``num_classes`` overrides it. Returns ``(model, meta)``, with
    ``meta["class_names"]`` when the file recorded them."""
    path = resolve_weights(source, sha256)
    state_dict, meta = read_weights(path)
    classes = num_classes or num_classes_of(state_dict, meta)
    model = get_model(model_name or meta.get("model", "alexnet"), num_classes=classes, **model_kwargs)
    load_state_dict_checked(model, state_dict, source=str(path))
    return model, dict(meta, num_classes=classes)


__all__ = ["AlexNet", "alexnet", "build_from_weights", "get_model", "list_models", "MIN_INPUT_SIZE"]
