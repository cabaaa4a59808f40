"""The answers: what the model endpoints decide, one module each, over one shared decision pipeline (`pipeline`).

Controllers (serving/controllers/) only bind HTTP to these functions.
"""
