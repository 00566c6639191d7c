from paddlevision.models.alexnet import MIN_INPUT_SIZE, AlexNet, alexnet

_MODELS = {"alexnet": alexnet}


def get_model(name, **kwargs):
    """Build a model by its command-line name; an unknown name lists the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown --model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**kwargs)


def list_models():
    return sorted(_MODELS)


__all__ = ["AlexNet", "alexnet", "get_model", "list_models", "MIN_INPUT_SIZE"]
