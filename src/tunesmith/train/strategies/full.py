"""Every parameter trains."""


def apply(model, k, recipe):
    for p in model.parameters():
        p.requires_grad = True
    return model
